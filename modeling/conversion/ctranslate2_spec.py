"""Our weights as CTranslate2's `TransformerSpec`: the loader that CTranslate2's own Transformers converter
(`ctranslate2.converters.TransformersConverter`) uses for this package's models, registered by config class as its
built-in loaders for Marian, M2M100 and the others are. CTranslate2 is the optional `serving` extra: it is imported
only when a loader is registered (`serving.exports` does so before converting)."""

import functools

import torch
from torch import nn

from ..configuration_vanilla_transformer import VanillaTransformerConfig
from ..modeling_vanilla_transformer import VanillaTransformerForConditionalGeneration


def check_ctranslate2_support(config: VanillaTransformerConfig) -> None:
    """Refuses, by name, the configurations that CTranslate2's Transformer cannot run."""
    from ctranslate2.converters.transformers import _SUPPORTED_ACTIVATIONS

    problems = []
    if config.activation_function not in _SUPPORTED_ACTIVATIONS:
        problems.append(f"activation_function={config.activation_function!r} (CTranslate2 runs {sorted(_SUPPORTED_ACTIVATIONS)})")
    if not config.normalize_before and config.add_final_layer_norm:
        problems.append("add_final_layer_norm=True with normalize_before=False (post-LN stacks end without a LayerNorm there)")
    if config.normalize_before and not config.add_final_layer_norm:
        problems.append("add_final_layer_norm=False with normalize_before=True (pre-LN stacks end with a LayerNorm there)")
    if config.encoder_attention_heads != config.decoder_attention_heads:
        problems.append(
            f"encoder_attention_heads={config.encoder_attention_heads} != decoder_attention_heads="
            f"{config.decoder_attention_heads} (one head count for both stacks)"
        )
    if problems:
        raise ValueError(
            "CTranslate2 cannot run this model: " + "; ".join(problems) + ". Serve it with --engine torch or export "
            "it with --format onnx."
        )


@functools.cache
def register_ctranslate2_loader():
    """Registers, once, with CTranslate2's Transformers converter the loader that maps our weights onto its
    `TransformerSpec`; the converter then loads the model through `AutoModelForSeq2SeqLM` (this package imported)."""
    from ctranslate2.converters import utils
    from ctranslate2.converters.transformers import _SUPPORTED_ACTIVATIONS, ModelLoader, register_loader
    from ctranslate2.specs import common_spec, transformer_spec

    @register_loader(VanillaTransformerConfig.__name__)
    class VanillaTransformerLoader(ModelLoader):
        architecture_name = "AutoModelForSeq2SeqLM"

        def get_model_spec(self, model: VanillaTransformerForConditionalGeneration):
            config = model.config
            check_ctranslate2_support(config)
            spec = transformer_spec.TransformerSpec.from_config(
                (config.encoder_layers, config.decoder_layers),
                config.encoder_attention_heads,
                pre_norm=config.normalize_before,
                activation=_SUPPORTED_ACTIVATIONS[config.activation_function],
            )
            self.set_stack(spec.encoder, model.model.encoder)
            self.set_stack(spec.decoder, model.model.decoder)
            self.set_linear(spec.decoder.projection, model.lm_head)
            if model.lm_head.bias is None:  # CTranslate2's projection has a bias: a zero one is the same
                spec.decoder.projection.bias = torch.zeros(config.decoder_vocab_size)
            return spec

        def set_stack(self, spec, stack):
            embeddings = stack.embeddings
            self.set_embeddings(spec.embeddings[0] if isinstance(spec.embeddings, list) else spec.embeddings, embeddings.embed_tokens)
            spec.scale_embeddings = embeddings.scale
            # CTranslate2's built-in sinusoids are [sin | cos] halves, the paper's interleave them: give it our table
            positions = embeddings.embed_positions
            spec.position_encodings.encodings = positions.table if hasattr(positions, "table") else positions.weight
            if isinstance(stack.final_layer_norm, nn.LayerNorm):
                self.set_layer_norm(spec.layer_norm, stack.final_layer_norm)
            for layer_spec, layer in zip(spec.layer, stack.layers):
                self.set_attention(layer_spec.self_attention, layer.self_attn, self_attention=True)
                self.set_layer_norm(layer_spec.self_attention.layer_norm, layer.self_attn_add_norm.layer_norm)
                if hasattr(layer, "cross_attn"):
                    self.set_attention(layer_spec.attention, layer.cross_attn, self_attention=False)
                    self.set_layer_norm(layer_spec.attention.layer_norm, layer.cross_attn_add_norm.layer_norm)
                self.set_linear(layer_spec.ffn.linear_0, layer.feed_forward.fc1)
                self.set_linear(layer_spec.ffn.linear_1, layer.feed_forward.fc2)
                self.set_layer_norm(layer_spec.ffn.layer_norm, layer.feed_forward_add_norm.layer_norm)

        def set_attention(self, spec, attention, self_attention: bool):
            query, keys_values = common_spec.LinearSpec(), common_spec.LinearSpec()
            self.set_linear(query, attention.q_proj)
            self.set_linear(keys_values, attention.kv_proj)  # [W^K W^V]: the order CTranslate2 fuses them in
            if self_attention:
                utils.fuse_linear(spec.linear[0], [query, keys_values])
            else:
                utils.fuse_linear(spec.linear[0], [query])
                utils.fuse_linear(spec.linear[1], [keys_values])
            self.set_linear(spec.linear[-1], attention.out_proj)

        def get_vocabulary(self, model, tokenizer):
            if getattr(tokenizer, "tgt_vocab_size", None) is not None or getattr(tokenizer, "separate_vocabs", False):
                raise ValueError(
                    f"CTranslate2 cannot run this model as exported here: its {type(tokenizer).__name__} has separate "
                    "source and target vocabularies, and the export names the tokens of one. Serve it with --engine "
                    "torch or export it with --format onnx."
                )
            tokens = super().get_vocabulary(model, tokenizer)
            # Embedding rows beyond the tokenizer's vocabulary (never produced by it) still need a name
            return tokens + [f"<unused_{i}>" for i in range(len(tokens), max(model.config.vocab_size, model.config.decoder_vocab_size))]

        def set_vocabulary(self, spec, tokens):
            spec.register_source_vocabulary(tokens[: spec.encoder.embeddings[0].weight.shape[0]])
            spec.register_target_vocabulary(tokens[: spec.decoder.embeddings.weight.shape[0]])

        def set_config(self, config, model, tokenizer):
            tokens = self.get_vocabulary(model, tokenizer)
            # opus-mt has no bos: the decoder's start token stands in (CTranslate2 needs one)
            bos = model.config.bos_token_id if model.config.bos_token_id is not None else model.config.decoder_start_token_id
            config.bos_token = tokens[bos]
            config.eos_token = tokens[model.config.eos_token_id]
            config.unk_token = tokenizer.unk_token or tokens[model.config.eos_token_id]
            config.decoder_start_token = tokens[model.config.decoder_start_token_id]
            config.layer_norm_epsilon = model.config.layer_norm_eps

    return VanillaTransformerLoader
