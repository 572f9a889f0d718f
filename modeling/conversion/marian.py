"""The same trained weights in transformers' `MarianMTModel`, a built-in model of the same architecture, to measure
our code against the library's on the same translations (the serving benchmark).

Marian's sinusoidal positions put the sines in the first half of the model dimension and the cosines in the second,
where the paper (and this package) interleave them: PE(pos, 2i) = sin, PE(pos, 2i + 1) = cos. A fixed permutation
of the model dimension maps one layout onto the other, and every operation of the residual stream commutes with
it (LayerNorm normalizes over the whole dimension; each projection only sees the dimension through its weights):
permuting the d_model side of every weight gives a Marian model with exactly our logits.
"""

import torch
from transformers import MarianConfig, MarianMTModel

from ..configuration_vanilla_transformer import VanillaTransformerConfig
from ..modeling_vanilla_transformer import VanillaTransformerForConditionalGeneration


def marian_permutation(d_model: int) -> torch.Tensor:
    """Marian's dimension k holds our dimension `permutation[k]`: 0, 2, 4, ... (sines), then 1, 3, 5, ... (cosines)."""
    return torch.cat([torch.arange(0, d_model, 2), torch.arange(1, d_model, 2)])


def marian_config(config: VanillaTransformerConfig) -> MarianConfig:
    """The `MarianConfig` of the same dimensions, vocabularies and special tokens as `config`."""
    return MarianConfig(
        vocab_size=config.vocab_size, decoder_vocab_size=config.decoder_vocab_size, d_model=config.d_model,
        encoder_layers=config.encoder_layers, decoder_layers=config.decoder_layers,
        encoder_attention_heads=config.encoder_attention_heads, decoder_attention_heads=config.decoder_attention_heads,
        encoder_ffn_dim=config.encoder_ffn_dim, decoder_ffn_dim=config.decoder_ffn_dim,
        activation_function=config.activation_function, dropout=config.dropout, attention_dropout=config.attention_dropout,
        activation_dropout=config.activation_dropout, scale_embedding=config.scale_embedding,
        max_position_embeddings=config.max_position_embeddings, pad_token_id=config.pad_token_id,
        eos_token_id=config.eos_token_id, bos_token_id=config.bos_token_id,
        decoder_start_token_id=config.decoder_start_token_id, forced_eos_token_id=None,
        share_encoder_decoder_embeddings=config.share_encoder_decoder_embeddings,
        tie_word_embeddings=config.tie_word_embeddings,
    )


def to_marian(model: VanillaTransformerForConditionalGeneration) -> MarianMTModel:
    """A `MarianMTModel` computing the same logits as `model` (post-LN, sinusoidal positions; refused otherwise)."""
    config = model.config
    if config.normalize_before or config.add_final_layer_norm:
        raise ValueError("MarianMTModel is post-LN without a final LayerNorm: a normalize_before / add_final_layer_norm model has no Marian equivalent.")
    if config.position_embedding_type != "sinusoidal":
        raise ValueError("MarianMTModel has sinusoidal positions only; this model learned its positions.")
    marian = MarianMTModel(marian_config(config))
    marian.set_attn_implementation(model.config._attn_implementation)
    p = marian_permutation(config.d_model)
    ours = model.model
    state = {}

    def linear(name, module, permute_input=True, permute_output=True):
        weight = module.weight
        weight = weight[:, p] if permute_input else weight
        state[f"{name}.weight"] = weight[p] if permute_output else weight
        if module.bias is not None:
            state[f"{name}.bias"] = module.bias[p] if permute_output else module.bias

    def layer_norm(name, module):
        state[f"{name}.weight"], state[f"{name}.bias"] = module.weight[p], module.bias[p]

    def attention(name, module):
        linear(f"{name}.q_proj", module.q_proj, permute_output=False)
        key_weight, value_weight = module.kv_proj.weight[:, p].chunk(2)
        key_bias, value_bias = module.kv_proj.bias.chunk(2)
        state[f"{name}.k_proj.weight"], state[f"{name}.v_proj.weight"] = key_weight, value_weight
        state[f"{name}.k_proj.bias"], state[f"{name}.v_proj.bias"] = key_bias, value_bias
        linear(f"{name}.out_proj", module.out_proj, permute_input=False)

    for side in ("encoder", "decoder"):
        stack = getattr(ours, side)
        state[f"model.{side}.embed_tokens.weight"] = stack.embeddings.embed_tokens.weight[:, p]
        for i, layer in enumerate(stack.layers):
            prefix = f"model.{side}.layers.{i}"
            attention(f"{prefix}.self_attn", layer.self_attn)
            layer_norm(f"{prefix}.self_attn_layer_norm", layer.self_attn_add_norm.layer_norm)
            if side == "decoder":
                attention(f"{prefix}.encoder_attn", layer.cross_attn)
                layer_norm(f"{prefix}.encoder_attn_layer_norm", layer.cross_attn_add_norm.layer_norm)
            linear(f"{prefix}.fc1", layer.feed_forward.fc1, permute_output=False)
            linear(f"{prefix}.fc2", layer.feed_forward.fc2, permute_input=False)
            layer_norm(f"{prefix}.final_layer_norm", layer.feed_forward_add_norm.layer_norm)
    state["lm_head.weight"] = model.lm_head.weight[:, p]
    if model.lm_head.bias is not None:
        state["final_logits_bias"] = model.lm_head.bias[None]
    with torch.no_grad():
        for name, tensor in marian.state_dict().items():
            if name in state:
                tensor.copy_(state.pop(name))
    if state:
        raise RuntimeError(f"Weights with no place in MarianMTModel: {sorted(state)}")
    marian.generation_config = model.generation_config
    return marian.to(model.device, model.dtype).eval()
