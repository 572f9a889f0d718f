"""vanilla-transformer: the encoder-decoder Transformer of "Attention Is All You Need" as a `transformers` model.

Importing the package registers the model with the Auto classes, so that `AutoConfig`, `AutoModel` and
`AutoModelForSeq2SeqLM` build and load it like any model of the library; these installed classes are then used
whether or not `trust_remote_code` is passed. Every saved model also carries its code, for those who load it with
only `transformers` installed (`trust_remote_code=True`).

The package, one folder per side, each importing only from the ones listed before it:
- `configuration_vanilla_transformer.py`, `modeling_vanilla_transformer.py`: the model (flat: they travel alone as
  the Hub's remote code, importing nothing else of the package);
- `conversion/`: the model to and from other frameworks' models of the same architecture;
- `data/`: tokenizer, corpora, batching;
- `training/`: the Trainer pipeline, the Accelerate loop, checkpoints, metrics, the Hub card;
- `serving/`: translation over any engine, the engines, the exports;
- `analysis/`: attention maps, plots, benchmarks;
- `recipes/`: the quick start, end to end.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM

from .configuration_vanilla_transformer import VanillaTransformerConfig
from .conversion.torch_transformer import from_torch_transformer
from .modeling_vanilla_transformer import (
    VanillaTransformerForConditionalGeneration,
    VanillaTransformerModel,
    VanillaTransformerPreTrainedModel,
)

__version__ = "0.2.0"

AutoConfig.register(VanillaTransformerConfig.model_type, VanillaTransformerConfig, exist_ok=True)
AutoModel.register(VanillaTransformerConfig, VanillaTransformerModel, exist_ok=True)
AutoModelForSeq2SeqLM.register(VanillaTransformerConfig, VanillaTransformerForConditionalGeneration, exist_ok=True)
# save_pretrained then copies the configuration and modeling files beside the weights (the Hub's "remote code")
VanillaTransformerConfig.register_for_auto_class("AutoConfig")
VanillaTransformerModel.register_for_auto_class("AutoModel")
VanillaTransformerForConditionalGeneration.register_for_auto_class("AutoModelForSeq2SeqLM")

# Modules of earlier releases and where they live now: the flat modules of 0.1.0 (`vanilla_transformer.training` and
# `vanilla_transformer.serving` are folders of the same names that keep their public names) and those moved since.
MOVED_MODULES = {
    "conversion.pytorch_tutorial": "analysis.pytorch_tutorial",
    "accelerate_training": "training.accelerate_loop",
    "attention_maps": "analysis.attention_maps",
    "benchmarking": "analysis.benchmarking",
    "checkpoint_averaging": "training.checkpoint_averaging",
    "checkpoint_integrity": "training.checkpoint_integrity",
    "evaluation": "training.evaluation",
    "hub": "training.hub",
    "inference": "serving.translation",
    "marian_conversion": "conversion.marian",
    "plotting": "analysis.plotting",
    "quickstart": "recipes.quickstart",
    "reference_models": "analysis.pytorch_tutorial",
    "tokenization": "data.tokenization",
    "torch_transformer_conversion": "conversion.torch_transformer",
    "toy_tasks": "data.toy_tasks",
    "translation_data": "data.translation_data",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module name as a module holding the names of its new place, with a FutureWarning naming it, so
    that code written against 0.1.0 (`from vanilla_transformer.inference import translate`) keeps working."""

    def find_spec(self, fullname, path, target=None):
        if fullname.removeprefix(f"{__name__}.") in MOVED_MODULES:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def exec_module(self, module):
        new_name = f"{__name__}.{MOVED_MODULES[module.__name__.removeprefix(f'{__name__}.')]}"
        warnings.warn(
            f"`{module.__name__}` moved to `{new_name}`; import it from there (the old name will be removed in a later "
            "release).",
            FutureWarning,
            stacklevel=2,
        )
        new = importlib.import_module(new_name)
        module.__dict__.update({key: value for key, value in vars(new).items() if not key.startswith("__")})


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModules())

__all__ = [
    "VanillaTransformerConfig",
    "VanillaTransformerForConditionalGeneration",
    "VanillaTransformerModel",
    "VanillaTransformerPreTrainedModel",
    "from_torch_transformer",
]
