"""Exports of a trained model to the engines people deploy with, each a folder that translates on its own.

`export_model(model_dir, "ctranslate2" | "onnx" | "web", output_dir)` writes the engine's files, the tokenizer, the
generation settings and `export.json` (the format and the model's config); `serving.engines.load_engine` then serves
the folder. CTranslate2 gets the model through its own converter (`TransformersConverter`, with the loader registered
below). ONNX gets graphs exported by `torch.onnx` from the model's own code in the layout of the Hugging Face
ecosystem (`serving.onnx_export`), with a `config.json` that transformers.js reads as `MarianMTModel`'s, whose
architecture ours is; "web" adds a page that translates in the browser with transformers.js (`serving.web_page`).
"""

import json
import tempfile
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from ..configuration_vanilla_transformer import VanillaTransformerConfig
from ..conversion.marian import marian_config
from ..modeling_vanilla_transformer import VanillaTransformerForConditionalGeneration
from .engines import EXPORT_INFO
from .onnx_export import export_onnx

EXPORT_FORMATS = ("ctranslate2", "onnx", "web")
CTRANSLATE2_QUANTIZATIONS = ("float32", "int8", "int8_float32", "int8_float16", "float16", "bfloat16")
ONNX_QUANTIZATIONS = ("float32", "int8")  # int8: the float32 graphs and `*_quantized.onnx` beside them


def export_model(model_dir: str, format: str, output_dir: str, quantization: str | None = None,
                 revision: str | None = None, transformers_js: str | None = None) -> Path:
    """Exports a saved model (a folder or a Hub id, with its tokenizer) to `output_dir`, which then translates on its
    own through `load_engine`. `quantization`: CTranslate2's (int8, float16, ...; default float32), or int8 for onnx
    and web (int8 graphs beside the float32 ones; engines and the page then run the int8 ones). "web" needs
    `transformers_js`, an installed `@huggingface/transformers` npm package, whose files the page carries."""
    if format not in EXPORT_FORMATS:
        raise ValueError(f"Unknown export format {format!r}; choose one of {', '.join(EXPORT_FORMATS)}.")
    allowed = CTRANSLATE2_QUANTIZATIONS if format == "ctranslate2" else ONNX_QUANTIZATIONS
    if quantization is not None and quantization not in allowed:
        raise ValueError(f"Unknown quantization {quantization!r} for {format}; choose one of {', '.join(allowed)}.")
    if format == "web":
        from .web_page import find_transformers_js

        library = find_transformers_js(transformers_js)  # refused before anything is exported
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
            export_onnx(model, staged, quantize=quantization == "int8")
            (staged / "config.json").write_text(json.dumps(web_config(model.config, quantization), indent=2) + "\n")
        tokenizer.save_pretrained(staged)
        model.generation_config.save_pretrained(staged)
        if format == "web":
            from .web_page import write_page

            write_page(staged, library)
        info = {"format": format, "quantization": quantization or "float32", "config": model.config.to_dict()}
        (staged / EXPORT_INFO).write_text(json.dumps(info, indent=2) + "\n")
        if output.exists():
            output.rename(Path(scratch) / "replaced")
        staged.rename(output)
    return output


def web_config(config: VanillaTransformerConfig, quantization: str | None) -> dict:
    """`config.json` as transformers.js reads it: `MarianMTModel`'s (the same architecture: its dimensions, layer and
    head counts, special tokens), and which graphs to run by default (int8 where the export has them)."""
    marian = marian_config(config).to_dict()
    marian["architectures"] = ["MarianMTModel"]
    marian["transformers.js_config"] = {"dtype": "q8" if quantization == "int8" else "fp32"}
    return marian


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
