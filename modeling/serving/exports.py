"""Exports of a trained model to the engines people deploy with, each a folder that translates on its own.

`export_model(model_dir, "ctranslate2" | "onnx" | "web", output_dir)` writes the engine's files, the tokenizer, the
generation settings and `export.json` (the format and the model's config); `serving.engines.load_engine` then serves
the folder. CTranslate2 gets the model through its own converter (`TransformersConverter`, with our weight mapping
`conversion.ctranslate2_spec` registered). ONNX gets graphs exported by `torch.onnx` from the model's own code in the layout of the Hugging Face
ecosystem (`serving.onnx_export`), with a `config.json` that transformers.js reads as `MarianMTModel`'s, whose
architecture ours is; "web" adds a page that translates in the browser with transformers.js (`serving.web_page`).
"""

import json
import tempfile
from pathlib import Path

from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from ..configuration_vanilla_transformer import VanillaTransformerConfig
from ..conversion.ctranslate2_spec import register_ctranslate2_loader
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

            register_ctranslate2_loader()
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
