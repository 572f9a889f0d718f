"""The open pretrained translators of this architecture as our model: opus-mt (Marian), NLLB-200 and M2M100
(`m2m_100`) and fairseq's WMT19 models (FSMT).

Each checkpoint is read through its family's own transformers class (`MarianMTModel`, `M2M100ForConditionalGeneration`,
`FSMTForConditionalGeneration`), so that every file format and quirk that class reads (old `.bin` files, stale
position weights, tied keys left out) is read the same way; then its modules are copied onto ours, whose config
switches (`position_embedding_type`, `normalize_before`, `add_final_layer_norm`, `lm_head_bias`,
`zero_pad_embedding`, the vocabulary sharing and tying flags; docs/concepts.md) make it compute what the source
computes. Before anything is written the two models translate a sentence of the source's own tokenizer side by side,
and the conversion stops if their logits differ.
"""

import copy
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoTokenizer, PreTrainedConfig

from ..configuration_vanilla_transformer import VanillaTransformerConfig
from ..modeling_vanilla_transformer import VanillaTransformerForConditionalGeneration

logger = logging.getLogger(__name__)

# The families whose transformers class is this architecture with a handful of switches
SUPPORTED_FAMILIES = {
    "marian": "opus-mt (Helsinki-NLP/opus-mt-*, tc-big, tiny)",
    "m2m_100": "NLLB-200 (dense) and M2M100",
    "fsmt": "fairseq's WMT19 (facebook/wmt19-*)",
}
# Relatives that are not: what differs, for the refusal
OTHER_FAMILIES = {
    "bart": "learned positions and a LayerNorm on the embeddings (layernorm_embedding)",
    "mbart": "learned positions, a LayerNorm on the embeddings (layernorm_embedding) and after each stack",
    "pegasus": "a pre-LN Transformer with its own position layout and no final-logits bias",
    "nllb-moe": "mixture-of-experts feed-forward layers",
    "t5": "relative position biases, RMSNorm and no biases",
    "mt5": "relative position biases, RMSNorm and gated feed-forward layers",
}
# What a conversion check on one sentence allows: fp32 logits of the same computation, summed in another order
CHECK_TOLERANCE = 1e-4


class ConversionError(ValueError):
    """A checkpoint, tokenizer or output folder that cannot be converted; the message names the problem and the fix."""


@dataclass
class Converted:
    output_dir: Path
    family: str
    max_logit_difference: float
    parameters: int


def family_classes(model_type: str):
    """The transformers model class of a supported family."""
    from transformers import FSMTForConditionalGeneration, M2M100ForConditionalGeneration, MarianMTModel

    return {"marian": MarianMTModel, "m2m_100": M2M100ForConditionalGeneration, "fsmt": FSMTForConditionalGeneration}[
        model_type
    ]


def read_source_config(model: str, revision: str | None = None, token: str | bool | None = None) -> PreTrainedConfig:
    """The source's config, refused unless it is one of the supported families."""
    try:
        config = AutoConfig.from_pretrained(model, revision=revision, token=token)
    except (OSError, ValueError) as error:
        raise ConversionError(
            f"{model!r} is not a model folder or Hub repository that transformers can read ({error}). Pass a Hub id "
            "such as Helsinki-NLP/opus-mt-de-en or a folder holding its config.json and weights."
        ) from error
    model_type = config.model_type
    if model_type not in SUPPORTED_FAMILIES:
        differs = f" ({OTHER_FAMILIES[model_type]})" if model_type in OTHER_FAMILIES else ""
        supported = "; ".join(f"{name}: {what}" for name, what in SUPPORTED_FAMILIES.items())
        raise ConversionError(
            f"{model!r} is a {model_type!r} model{differs}, not one of the families that load into this Transformer "
            f"exactly ({supported})."
        )
    return config


def output_projection(source) -> nn.Linear:
    """The pre-softmax projection (FSMT keeps its own in the decoder, and its `get_output_embeddings()` answers the
    target embedding)."""
    decoder = source.get_decoder()
    return decoder.output_projection if hasattr(decoder, "output_projection") else source.get_output_embeddings()


def our_config(source, model_type: str) -> VanillaTransformerConfig:
    """Our config for the source model, its switches read from the source's config and its actual weight sharing."""
    config = source.config
    encoder, decoder = source.get_encoder(), source.get_decoder()
    for name in ("encoder_layerdrop", "decoder_layerdrop"):
        if getattr(config, name, 0):
            logger.warning("%s=%s is not kept: fine-tuning the converted model runs every layer.", name, getattr(config, name))
    shared = encoder.embed_tokens.weight is decoder.embed_tokens.weight
    tied = output_projection(source).weight is decoder.embed_tokens.weight
    fairseq = model_type in ("m2m_100", "fsmt")
    return VanillaTransformerConfig(
        vocab_size=encoder.embed_tokens.weight.shape[0],
        decoder_vocab_size=decoder.embed_tokens.weight.shape[0],
        d_model=config.d_model,
        encoder_layers=config.encoder_layers,
        decoder_layers=config.decoder_layers,
        encoder_attention_heads=config.encoder_attention_heads,
        decoder_attention_heads=config.decoder_attention_heads,
        encoder_ffn_dim=config.encoder_ffn_dim,
        decoder_ffn_dim=config.decoder_ffn_dim,
        activation_function=config.activation_function,
        dropout=config.dropout,
        attention_dropout=config.attention_dropout,
        activation_dropout=config.activation_dropout,
        max_position_embeddings=config.max_position_embeddings,
        position_embedding_type="sinusoidal_fairseq" if fairseq else "sinusoidal_marian",
        scale_embedding=config.scale_embedding,
        normalize_before=model_type == "m2m_100",
        add_final_layer_norm=model_type == "m2m_100",
        share_encoder_decoder_embeddings=shared,
        tie_word_embeddings=tied,
        lm_head_bias=model_type == "marian",
        zero_pad_embedding=True,
        pad_token_id=config.pad_token_id,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        decoder_start_token_id=config.decoder_start_token_id,
    )


def copy_linear(ours: nn.Linear, theirs: nn.Linear):
    ours.weight.copy_(theirs.weight)
    if ours.bias is not None:
        ours.bias.copy_(theirs.bias if theirs.bias is not None else torch.zeros_like(ours.bias))


def copy_attention(ours, theirs):
    copy_linear(ours.q_proj, theirs.q_proj)
    ours.kv_proj.weight.copy_(torch.cat([theirs.k_proj.weight, theirs.v_proj.weight]))  # [W^K W^V]
    ours.kv_proj.bias.copy_(torch.cat([theirs.k_proj.bias, theirs.v_proj.bias]))
    copy_linear(ours.out_proj, theirs.out_proj)


def copy_stack(ours, theirs):
    """One stack's weights; the source layers name their parts as BART does (Marian, M2M100 and FSMT all do)."""
    ours.embeddings.embed_tokens.weight.copy_(theirs.embed_tokens.weight)
    for our_layer, their_layer in zip(ours.layers, theirs.layers, strict=True):
        copy_attention(our_layer.self_attn, their_layer.self_attn)
        our_layer.self_attn_add_norm.layer_norm.load_state_dict(their_layer.self_attn_layer_norm.state_dict())
        if hasattr(their_layer, "encoder_attn"):
            copy_attention(our_layer.cross_attn, their_layer.encoder_attn)
            our_layer.cross_attn_add_norm.layer_norm.load_state_dict(their_layer.encoder_attn_layer_norm.state_dict())
        copy_linear(our_layer.feed_forward.fc1, their_layer.fc1)
        copy_linear(our_layer.feed_forward.fc2, their_layer.fc2)
        our_layer.feed_forward_add_norm.layer_norm.load_state_dict(their_layer.final_layer_norm.state_dict())
    if isinstance(ours.final_layer_norm, nn.LayerNorm):
        ours.final_layer_norm.load_state_dict(theirs.layer_norm.state_dict())


@torch.no_grad()
def from_pretrained_translator(source) -> VanillaTransformerForConditionalGeneration:
    """Our model computing what `source` (a `MarianMTModel`, `M2M100ForConditionalGeneration` or
    `FSMTForConditionalGeneration`) computes, with its generation config."""
    model_type = source.config.model_type
    model = VanillaTransformerForConditionalGeneration(our_config(source, model_type)).eval()
    copy_stack(model.model.encoder, source.get_encoder())
    copy_stack(model.model.decoder, source.get_decoder())
    if not model.config.tie_word_embeddings:
        model.lm_head.weight.copy_(output_projection(source).weight)
    if model.config.lm_head_bias:
        model.lm_head.bias.copy_(source.final_logits_bias[0])
    model.generation_config = copy.deepcopy(source.generation_config)
    return model


def check_tokenizer(tokenizer, config: VanillaTransformerConfig, model: str):
    """Refuses a tokenizer whose ids do not fit the embeddings or whose special tokens are not the model's."""
    # M2M100Tokenizer keeps its language codes out of `get_vocab()`
    largest_id = max([*tokenizer.get_vocab().values(), *getattr(tokenizer, "lang_code_to_id", {}).values()])
    if largest_id >= config.vocab_size:
        raise ConversionError(
            f"The tokenizer of {model!r} has token ids up to {largest_id} but the model embeds {config.vocab_size} "
            "tokens: they are not each other's. Use the tokenizer files that were published with these weights."
        )
    target_vocab_size = getattr(tokenizer, "tgt_vocab_size", None)  # FSMT's separate target vocabulary
    if target_vocab_size is not None and target_vocab_size > config.decoder_vocab_size:
        raise ConversionError(
            f"The target vocabulary of {model!r}'s tokenizer has {target_vocab_size} tokens but the model's decoder "
            f"embeds {config.decoder_vocab_size}: they are not each other's. Use the tokenizer files published with "
            "these weights."
        )
    for name in ("pad_token_id", "eos_token_id"):
        # A tokenizer without the token (FSMT's has no eos of its own) has nothing to disagree about
        if getattr(tokenizer, name) not in (None, getattr(config, name)):
            raise ConversionError(
                f"The tokenizer of {model!r} has {name}={getattr(tokenizer, name)}, the model "
                f"{getattr(config, name)}: they are not each other's. Use the tokenizer files published with these "
                "weights."
            )


def check_output_dir(output_dir: Path):
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        what = "a model" if (output_dir / "config.json").exists() else "files"
        raise ConversionError(
            f"{output_dir} already holds {what}; nothing was written. Choose a new folder, or remove this one first."
        )


def sample_batch(tokenizer) -> dict:
    """Two sentences of different lengths (one padded) and their targets, from the source's own tokenizer."""
    sources = ["A man in a blue shirt is standing on a ladder.", "Two dogs play."]
    targets = ["Ein Mann in einem blauen Hemd steht auf einer Leiter.", "Zwei Hunde spielen."]
    return tokenizer(sources, text_target=targets, padding=True, return_tensors="pt")


@torch.no_grad()
def max_logit_difference(ours, source, batch) -> float:
    """The largest difference between the two models' logits at the real target positions."""
    labels = batch["labels"]
    decoder_attention_mask = (labels != source.config.pad_token_id).long()
    labels = labels.masked_fill(decoder_attention_mask == 0, -100)
    inputs = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    decoder_input_ids = ours.prepare_decoder_input_ids_from_labels(labels)
    # use_cache=False: with a cache, FSMT scores a whole target without its causal mask (a transformers quirk)
    their_logits = source(**inputs, decoder_input_ids=decoder_input_ids, use_cache=False).logits
    our_logits = ours(**inputs, decoder_input_ids=decoder_input_ids, decoder_attention_mask=decoder_attention_mask).logits
    real = decoder_attention_mask.bool()
    return (our_logits[real] - their_logits[real]).abs().max().item()


def convert_pretrained_translator(
    model: str, output_dir: str | os.PathLike, revision: str | None = None, token: str | bool | None = None
) -> Converted:
    """Converts the checkpoint `model` (a Hub id or a folder) of a supported family into a folder of our model, its
    tokenizer and generation config, which `AutoModelForSeq2SeqLM` / `AutoTokenizer` load (with
    `trust_remote_code=True` where this package is not installed). Everything is checked before anything is
    written, and the folder is written under another name and renamed when complete."""
    output_dir = Path(output_dir)
    check_output_dir(output_dir)
    source_config = read_source_config(model, revision, token)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model, revision=revision, token=token)
    except (OSError, ValueError, TypeError) as error:
        raise ConversionError(
            f"The tokenizer of {model!r} cannot be loaded ({error}). A converted model needs its tokenizer: put the "
            "tokenizer files published with the model (for opus-mt source.spm, target.spm and vocab.json; for NLLB "
            "tokenizer.json or sentencepiece.bpe.model) beside its config.json."
        ) from error
    source = family_classes(source_config.model_type).from_pretrained(model, revision=revision, token=token).eval()
    ours = from_pretrained_translator(source)
    check_tokenizer(tokenizer, ours.config, model)
    difference = max_logit_difference(ours, source, sample_batch(tokenizer))
    if not difference <= CHECK_TOLERANCE:
        raise ConversionError(
            f"The converted model's logits differ from {model!r}'s by {difference:.2e} on a test sentence: this "
            "checkpoint has a variant the conversion does not know. Nothing was written; please report it."
        )
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.partial-", dir=output_dir.parent))
    try:
        ours.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        check_output_dir(output_dir)  # nothing appeared there meanwhile
        if output_dir.exists():
            output_dir.rmdir()
        partial.rename(output_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return Converted(output_dir, source_config.model_type, difference, ours.num_parameters())
