"""Exports of a trained model to the engines people deploy with, each a folder that translates on its own.

`export_model(model_dir, "ctranslate2" | "onnx", output_dir)` writes the engine's files, the tokenizer, the generation
settings and `export.json` (the format and the model's config); `serving.engines.load_engine` then serves the folder.
CTranslate2 gets the model through its own converter (`TransformersConverter`, with the loader registered below);
ONNX gets graphs exported by `torch.onnx` from the model's own code (see `export_onnx`).
"""

import contextlib
import json
import logging
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from ..configuration_vanilla_transformer import VanillaTransformerConfig
from ..modeling_vanilla_transformer import PackedTokens, VanillaTransformerForConditionalGeneration
from .engines import EXPORT_INFO

EXPORT_FORMATS = ("ctranslate2", "onnx")
CTRANSLATE2_QUANTIZATIONS = ("float32", "int8", "int8_float32", "int8_float16", "float16", "bfloat16")


def export_model(model_dir: str, format: str, output_dir: str, quantization: str | None = None,
                 revision: str | None = None) -> Path:
    """Exports a saved model (a folder or a Hub id, with its tokenizer) to `output_dir`, which then translates on its
    own through `load_engine`. `quantization` is CTranslate2's (int8, float16, ...; default float32)."""
    if format not in EXPORT_FORMATS:
        raise ValueError(f"Unknown export format {format!r}; choose one of {', '.join(EXPORT_FORMATS)}.")
    if quantization is not None and format != "ctranslate2":
        raise ValueError("--quantization applies to the ctranslate2 format only; ONNX graphs are exported in float32.")
    if quantization is not None and quantization not in CTRANSLATE2_QUANTIZATIONS:
        raise ValueError(f"Unknown quantization {quantization!r}; choose one of {', '.join(CTRANSLATE2_QUANTIZATIONS)}.")
    output = Path(output_dir)
    if output.exists() and (not output.is_dir() or (any(output.iterdir()) and not (output / EXPORT_INFO).is_file())):
        raise ValueError(
            f"{output_dir} exists and is not an earlier export: choose a new or empty folder (an export replaces only "
            "an earlier export)."
        )
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir, revision=revision).eval()
    if not isinstance(model, VanillaTransformerForConditionalGeneration):
        raise ValueError(f"{model_dir} holds a {type(model).__name__}; this exporter takes vanilla_transformer models.")
    tokenizer = AutoTokenizer.from_pretrained(model_dir, revision=revision)
    output.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and moved in place when complete: a failed or killed export leaves the target as it was
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=f".{output.name}.") as scratch:
        staged = Path(scratch) / "export"
        if format == "ctranslate2":
            import ctranslate2

            converter = ctranslate2.converters.TransformersConverter(model_dir, revision=revision)
            converter.convert(str(staged), quantization=quantization)
        else:
            staged.mkdir()
            export_onnx(model, staged)
        tokenizer.save_pretrained(staged)
        model.generation_config.save_pretrained(staged)
        info = {"format": format, "quantization": quantization or "float32", "config": model.config.to_dict()}
        (staged / EXPORT_INFO).write_text(json.dumps(info, indent=2) + "\n")
        if output.exists():
            output.rename(Path(scratch) / "replaced")
        staged.rename(output)
    return output


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


def _ctranslate2_loader():
    """Registers with CTranslate2's Transformers converter the loader that maps our weights onto its
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
            tokens = super().get_vocabulary(model, tokenizer)
            # Embedding rows beyond the tokenizer's vocabulary (never produced by it) still need a name
            return tokens + [f"<unused_{i}>" for i in range(len(tokens), max(model.config.vocab_size, model.config.decoder_vocab_size))]

        def set_vocabulary(self, spec, tokens):
            spec.register_source_vocabulary(tokens[: spec.encoder.embeddings[0].weight.shape[0]])
            spec.register_target_vocabulary(tokens[: spec.decoder.embeddings.weight.shape[0]])

        def set_config(self, config, model, tokenizer):
            tokens = self.get_vocabulary(model, tokenizer)
            config.bos_token = tokens[model.config.bos_token_id]
            config.eos_token = tokens[model.config.eos_token_id]
            config.unk_token = tokenizer.unk_token or tokens[model.config.eos_token_id]
            config.decoder_start_token = tokens[model.config.decoder_start_token_id]
            config.layer_norm_epsilon = model.config.layer_norm_eps

    return VanillaTransformerLoader


try:
    _ctranslate2_loader()
except ImportError:  # CTranslate2 is the optional [serving] extra
    pass


class EncoderGraph(nn.Module):
    """The encoder, and the keys and values that every decoder layer's cross-attention takes from its output:
    computed once per sentence, as `EncoderDecoderCache` holds them in PyTorch."""

    def __init__(self, model: VanillaTransformerForConditionalGeneration):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        memory = self.model.model.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        tokens = PackedTokens(attention_mask, *memory.shape[:2])
        keys_values = []
        for layer in self.model.model.decoder.layers:
            keys_values += layer.cross_attn.project_keys_values(tokens.pack(memory), tokens)
        return torch.stack(keys_values, dim=1)  # (batch, 2 * layers, heads, source_seq, head_dim)


class DecoderStepGraph(nn.Module):
    """One decoding step: the new target tokens, the cross-attention keys/values of `EncoderGraph`, and the
    decoder's own keys/values of the past positions -> the next-token logits and the new positions' keys/values.
    Keys and values of all layers travel stacked, K and V of layer i at 2i and 2i + 1."""

    def __init__(self, model: VanillaTransformerForConditionalGeneration):
        super().__init__()
        self.model = model

    def forward(self, decoder_input_ids, encoder_attention_mask, cross_keys_values, past_keys_values):
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        for i in range(len(self.model.model.decoder.layers)):
            cache.self_attention_cache.update(past_keys_values[:, 2 * i], past_keys_values[:, 2 * i + 1], i)
            cache.cross_attention_cache.update(cross_keys_values[:, 2 * i], cross_keys_values[:, 2 * i + 1], i)
            cache.is_updated[i] = True
        batch, _, heads, source_seq, head_dim = cross_keys_values.shape
        # The cached cross-attention keys/values stand for the encoder output, of which only the shape is read
        memory = cross_keys_values.new_zeros(batch, source_seq, heads * head_dim)
        outputs = self.model(
            attention_mask=encoder_attention_mask, decoder_input_ids=decoder_input_ids,
            encoder_outputs=(memory,), cache=cache, use_cache=True, logits_to_keep=1,
        )
        past = past_keys_values.shape[3]
        new = [state[:, :, past:] for layer in cache.self_attention_cache.layers for state in (layer.keys, layer.values)]
        return outputs.logits[:, -1], torch.stack(new, dim=1)  # (batch, vocab), (batch, 2 * layers, heads, new, head_dim)


def export_onnx(model: VanillaTransformerForConditionalGeneration, output_dir: Path) -> None:
    """Writes `encoder.onnx` and `decoder_step.onnx` (see the graphs above), with dynamic batch, source, target and
    past lengths, through the `torch.onnx` exporter (torch.export underneath), and checks them on ONNX Runtime
    against the model: an export that computes something else is refused before anyone serves it."""
    import onnxruntime

    config = model.config
    layers, heads, head_dim = config.decoder_layers, config.decoder_attention_heads, config.d_model // config.decoder_attention_heads
    # Example sizes other than 0 and 1, which the exporter would take for constants
    batch, source, past, new = torch.export.Dim("batch"), torch.export.Dim("source_seq"), torch.export.Dim("past_seq", min=0), torch.export.Dim("new_seq")
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(4, config.vocab_size, (3, 7), generator=generator)
    attention_mask = torch.tensor([[1] * 7, [1] * 5 + [0] * 2, [1] * 3 + [0] * 4])
    encoder, step = EncoderGraph(model).eval(), DecoderStepGraph(model).eval()
    with torch.no_grad():
        cross = encoder(input_ids, attention_mask)
        step_inputs = (
            torch.randint(4, config.decoder_vocab_size, (3, 2), generator=generator), attention_mask, cross,
            torch.randn(3, 2 * layers, heads, 4, head_dim, generator=generator),
        )
        expected = {"encoder.onnx": (cross,), "decoder_step.onnx": step(*step_inputs)}
    exports = {
        "encoder.onnx": (encoder, (input_ids, attention_mask), ["input_ids", "attention_mask"], ["cross_keys_values"],
                         {"input_ids": {0: batch, 1: source}, "attention_mask": {0: batch, 1: source}}),
        "decoder_step.onnx": (
            step, step_inputs, ["decoder_input_ids", "encoder_attention_mask", "cross_keys_values", "past_keys_values"],
            ["logits", "new_keys_values"],
            {"decoder_input_ids": {0: batch, 1: new}, "encoder_attention_mask": {0: batch, 1: source},
             "cross_keys_values": {0: batch, 3: source}, "past_keys_values": {0: batch, 3: past}},
        ),
    }
    for name, (module, inputs, input_names, output_names, dynamic_shapes) in exports.items():
        # The exporter reports every step and every operator library it skips: noise for whoever exports a model
        with torch.no_grad(), warnings.catch_warnings(), _quiet("torch.onnx"):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module, inputs, str(output_dir / name), input_names=input_names, output_names=output_names,
                dynamic_shapes=dynamic_shapes, dynamo=True, external_data=False, verbose=False,
            )
        session = onnxruntime.InferenceSession(str(output_dir / name), providers=["CPUExecutionProvider"])
        got = session.run(None, {key: value.numpy() for key, value in zip(input_names, inputs)})
        for want, have in zip(expected[name], got):
            if not torch.allclose(torch.from_numpy(have), want, atol=1e-4, rtol=1e-4):
                raise RuntimeError(
                    f"The exported {name} computes something else than the model (largest difference "
                    f"{(torch.from_numpy(have) - want).abs().max():.2e}); please report this with your config.json."
                )


@contextlib.contextmanager
def _quiet(logger_name: str):
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


