"""Serving a trained model: `translate` (batching by length and tokens, input order, one result per line) over any
engine, the engines (PyTorch's `generate()`, CTranslate2, ONNX Runtime: `load_engine`), and the exports they run
(`export_model`).

    from vanilla_transformer.serving import load_engine, translate

The names below include those that `vanilla_transformer.serving` held before the package had folders.
"""

from .engines import ENGINES, DecodingOptions, as_engine, load_engine
from .exports import CTRANSLATE2_QUANTIZATIONS, EXPORT_FORMATS, export_model
from .translation import TranslationError, translate

__all__ = [
    "CTRANSLATE2_QUANTIZATIONS",
    "DecodingOptions",
    "ENGINES",
    "EXPORT_FORMATS",
    "TranslationError",
    "as_engine",
    "export_model",
    "load_engine",
    "translate",
]
