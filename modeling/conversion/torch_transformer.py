"""Bring a model trained with `torch.nn.Transformer` (as in the official PyTorch translation tutorial) into
vanilla-transformer: same numbers, now with `save_pretrained`, `generate()` and the rest of the ecosystem."""

import torch
import torch.nn.functional as F
from torch import nn

from ..configuration_vanilla_transformer import VanillaTransformerConfig
from ..modeling_vanilla_transformer import (
    AddAndNorm,
    MultiHeadAttention,
    PositionwiseFeedForward,
    VanillaTransformerForConditionalGeneration,
)


def from_torch_transformer(
    transformer: nn.Transformer,
    src_embedding: nn.Module,
    tgt_embedding: nn.Module,
    generator: nn.Linear,
    *,
    scale_embedding: bool = True,
    pad_token_id: int = 1,
    bos_token_id: int = 2,
    eos_token_id: int = 3,
    max_position_embeddings: int = 5000,
) -> VanillaTransformerForConditionalGeneration:
    """Builds a `VanillaTransformerForConditionalGeneration` with the weights of a `torch.nn.Transformer` and the
    embeddings and output layer around it.

    Args:
        transformer: the `nn.Transformer` (`batch_first` either way, `norm_first` either way).
        src_embedding / tgt_embedding: the token embeddings, an `nn.Embedding` or the tutorial's `TokenEmbedding`
            (whose `.embedding` is one). Passing the same module twice gives shared embeddings.
        generator: the `nn.Linear` from d_model to the target vocabulary (the tutorial's `generator`).
        scale_embedding: whether the source model multiplies embeddings by sqrt(d_model) (the tutorial does).
        pad_token_id, bos_token_id, eos_token_id: the tutorial's ids (PAD 1, BOS 2, EOS 3) by default. The decoder
            starts from BOS, as the tutorial's `greedy_decode` does.
        max_position_embeddings: length of the sinusoid table (the tutorial's `maxlen`).

    The positional encoding must be the paper's interleaved sine/cosine (the tutorial's `PositionalEncoding`), which
    the model recomputes rather than copies. Raises `ValueError` for what the model cannot represent.
    """
    encoder_layers, decoder_layers = list(transformer.encoder.layers), list(transformer.decoder.layers)
    if not encoder_layers or not decoder_layers:
        raise ValueError("The nn.Transformer has an empty encoder or decoder stack; both need at least one layer.")
    first = encoder_layers[0]
    src_table, tgt_table = _embedding_table(src_embedding, "src_embedding"), _embedding_table(tgt_embedding, "tgt_embedding")
    d_model = first.self_attn.embed_dim
    tied_output = generator.weight is tgt_table.weight
    final_norms = (transformer.encoder.norm, transformer.decoder.norm)
    if (final_norms[0] is None) != (final_norms[1] is None):
        raise ValueError("Only one stack of the nn.Transformer has a final LayerNorm; the model needs both or neither.")

    config = VanillaTransformerConfig(
        vocab_size=src_table.num_embeddings,
        decoder_vocab_size=tgt_table.num_embeddings,
        d_model=d_model,
        encoder_layers=len(encoder_layers),
        decoder_layers=len(decoder_layers),
        encoder_attention_heads=first.self_attn.num_heads,
        decoder_attention_heads=decoder_layers[0].self_attn.num_heads,
        encoder_ffn_dim=first.linear1.out_features,
        decoder_ffn_dim=decoder_layers[0].linear1.out_features,
        activation_function=_activation_name(first),
        dropout=first.dropout1.p,
        attention_dropout=first.self_attn.dropout,
        activation_dropout=first.dropout.p,
        max_position_embeddings=max_position_embeddings,
        scale_embedding=scale_embedding,
        normalize_before=first.norm_first,
        add_final_layer_norm=final_norms[0] is not None,
        layer_norm_eps=first.norm1.eps,
        share_encoder_decoder_embeddings=src_table is tgt_table,
        tie_word_embeddings=tied_output,
        lm_head_bias=generator.bias is not None,
        pad_token_id=pad_token_id,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        decoder_start_token_id=bos_token_id,
    )
    for layer in encoder_layers + decoder_layers:
        _check_layer(layer, config)

    model = VanillaTransformerForConditionalGeneration(config)
    with torch.no_grad():
        model.model.encoder.embeddings.embed_tokens.weight.copy_(src_table.weight)
        model.model.decoder.embeddings.embed_tokens.weight.copy_(tgt_table.weight)
        model.lm_head.weight.copy_(generator.weight)
        if generator.bias is not None:
            model.lm_head.bias.copy_(generator.bias)
        for ours, theirs in zip(model.model.encoder.layers, encoder_layers):
            _copy_attention(ours.self_attn, theirs.self_attn)
            _copy_add_norm(ours.self_attn_add_norm, theirs.norm1)
            _copy_feed_forward(ours.feed_forward, theirs)
            _copy_add_norm(ours.feed_forward_add_norm, theirs.norm2)
        for ours, theirs in zip(model.model.decoder.layers, decoder_layers):
            _copy_attention(ours.self_attn, theirs.self_attn)
            _copy_add_norm(ours.self_attn_add_norm, theirs.norm1)
            _copy_attention(ours.cross_attn, theirs.multihead_attn)
            _copy_add_norm(ours.cross_attn_add_norm, theirs.norm2)
            _copy_feed_forward(ours.feed_forward, theirs)
            _copy_add_norm(ours.feed_forward_add_norm, theirs.norm3)
        if config.add_final_layer_norm:
            model.model.encoder.final_layer_norm.load_state_dict(final_norms[0].state_dict())
            model.model.decoder.final_layer_norm.load_state_dict(final_norms[1].state_dict())
    return model


def _embedding_table(module: nn.Module, name: str) -> nn.Embedding:
    table = module if isinstance(module, nn.Embedding) else getattr(module, "embedding", None)
    if not isinstance(table, nn.Embedding):
        raise ValueError(
            f"`{name}` must be an nn.Embedding or a module whose `.embedding` is one (the tutorial's TokenEmbedding), "
            f"got {type(module).__name__}."
        )
    return table


def _activation_name(layer: nn.Module) -> str:
    activation = layer.activation
    if activation is F.relu or type(activation) is nn.ReLU:
        return "relu"
    if activation is F.gelu or (type(activation) is nn.GELU and activation.approximate == "none"):
        return "gelu"
    raise ValueError(
        f"The nn.Transformer uses a custom activation ({activation!r}); only activation='relu' or 'gelu' (as strings, "
        "F.relu / F.gelu, or nn.ReLU() / nn.GELU()) can be converted."
    )


def _check_layer(layer: nn.Module, config: VanillaTransformerConfig) -> None:
    if layer.linear1.bias is None or layer.self_attn.in_proj_bias is None:
        raise ValueError("The nn.Transformer was built with bias=False; the model has biases in every projection.")
    if layer.norm_first != config.normalize_before or _activation_name(layer) != config.activation_function:
        raise ValueError("The nn.Transformer's layers differ in norm_first or activation; all layers must agree.")
    if layer.self_attn.embed_dim != config.d_model or not layer.self_attn._qkv_same_embed_dim:
        raise ValueError("Every attention of the nn.Transformer must map d_model to d_model (no kdim / vdim).")


def _copy_attention(ours: MultiHeadAttention, theirs: nn.MultiheadAttention) -> None:
    # nn.MultiheadAttention packs [W^Q; W^K; W^V] in one (3 d_model, d_model) matrix
    d_model = theirs.embed_dim
    ours.q_proj.weight.copy_(theirs.in_proj_weight[:d_model])
    ours.q_proj.bias.copy_(theirs.in_proj_bias[:d_model])
    ours.kv_proj.weight.copy_(theirs.in_proj_weight[d_model:])
    ours.kv_proj.bias.copy_(theirs.in_proj_bias[d_model:])
    ours.out_proj.load_state_dict(theirs.out_proj.state_dict())


def _copy_feed_forward(ours: PositionwiseFeedForward, layer: nn.Module) -> None:
    ours.fc1.load_state_dict(layer.linear1.state_dict())
    ours.fc2.load_state_dict(layer.linear2.state_dict())


def _copy_add_norm(ours: AddAndNorm, norm: nn.LayerNorm) -> None:
    ours.layer_norm.load_state_dict(norm.state_dict())

