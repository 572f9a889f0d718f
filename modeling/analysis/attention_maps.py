"""What the model attends to, for one sentence: the attention weights of every layer and head (encoder
self-attention, decoder masked self-attention, cross-attention) with the tokens that label their rows and columns,
for notebooks and for `scripts/plot_attention.py`."""

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class AttentionMaps:
    """Attention weights softmax(QK^T / sqrt(d_k)) of one sentence pair; every row sums to 1.

    encoder: (layers, heads, source, source); decoder: (layers, heads, target, target), zero above the diagonal
    (the mask of the future); cross: (layers, heads, target, source). Row t of the decoder's maps is the step that
    produces `target_tokens[t]`; it reads the tokens before it (`<s>` first).
    """

    source_tokens: list[str]
    target_tokens: list[str]
    encoder: torch.Tensor
    decoder: torch.Tensor
    cross: torch.Tensor


def token_labels(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> list[str]:
    """Readable labels: each token decoded on its own ("Ġdog" -> " dog" -> "dog"), specials as they are."""
    return [tokenizer.decode([i]).strip() or tokenizer.convert_ids_to_tokens(i) for i in ids]


def attention_maps(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    source: str,
    target: str | None = None,
    **generate_kwargs,
) -> AttentionMaps:
    """The attention of `model` on `source` while it produces `target` (teacher-forced), or, without `target`, its
    own translation (`generate()` with the model's generation config and `generate_kwargs`). The fused kernels do
    not return weights, so the explicit "eager" attention computes them; the model's own setting is restored."""
    source_ids = tokenizer(source, return_tensors="pt").input_ids.to(model.device)
    start = model.config.decoder_start_token_id
    if target is None:
        with torch.no_grad():
            generated = model.generate(input_ids=source_ids, **generate_kwargs)[0].tolist()
        target_ids = [token for token in generated[1:] if token != model.config.pad_token_id]
    else:
        target_ids = tokenizer(text_target=target).input_ids
    decoder_input_ids = torch.tensor([[start] + target_ids[:-1]], device=model.device)

    implementation = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            outputs = model(input_ids=source_ids, decoder_input_ids=decoder_input_ids, output_attentions=True)
    finally:
        model.set_attn_implementation(implementation)
    return AttentionMaps(
        source_tokens=token_labels(tokenizer, source_ids[0].tolist()),
        target_tokens=token_labels(tokenizer, target_ids),
        encoder=torch.stack(outputs.encoder_attentions)[:, 0].float().cpu(),
        decoder=torch.stack(outputs.decoder_attentions)[:, 0].float().cpu(),
        cross=torch.stack(outputs.cross_attentions)[:, 0].float().cpu(),
    )
