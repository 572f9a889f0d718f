"""The engines that translate with a trained or exported model, behind one interface, and `load_engine` to get one.

- `load_engine(path, engine="auto")` returns an engine and the tokenizer for `serving.translation.translate`:
  PyTorch's `generate()` on a saved model, a CTranslate2 `Translator`, or `generate()` over ONNX Runtime sessions,
  for a folder written by `serving.exports.export_model`.

An engine turns batches of source token ids into target token ids (`translate_ids`) with `DecodingOptions`; all the
rest of translation (tokenizing, batching, order, decoding) is `serving.translation.translate`, the same for every
engine. `translate_ids` may be called from `parallel_batches` threads at once: the engine's `threads` are shared
among them (CTranslate2's inter_threads and intra_threads), so that small batches, whose steps are too short to keep
several threads busy, keep every core busy side by side instead.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, GenerationConfig

from ..data.tokenization import is_multilingual, use_language_codes


ENGINES = ("auto", "torch", "ctranslate2", "onnxruntime")
EXPORT_INFO = "export.json"  # what an exported folder is: its format and the model's config


@dataclass
class DecodingOptions:
    """What decoding needs beyond the model, the same for every engine. `max_length` counts the decoder's start token,
    as `GenerationConfig.max_length` does: at most `max_length - 1` tokens are generated."""

    num_beams: int = 1
    length_penalty: float = 1.0
    max_length: int = 128


class GenerateEngine:
    """Translates with `generate()` of a seq2seq model: a `VanillaTransformerForConditionalGeneration`, or the ONNX
    Runtime model below. Beam search and greedy decoding are then exactly the library's."""

    def __init__(self, model, parallel_batches: int = 1):
        self.model = model
        self.parallel_batches = parallel_batches
        self.max_source_length = model.config.max_position_embeddings

    @property
    def generation_config(self) -> GenerationConfig:
        return self.model.generation_config

    def decoding_options(self, **overrides) -> DecodingOptions:
        return decoding_options(self.model.generation_config, **overrides)

    def translate_ids(self, sources: list[list[int]], options: DecodingOptions) -> list[list[int]]:
        input_ids, attention_mask = pad_right(sources, self.model.config.pad_token_id)
        with torch.inference_mode():
            outputs = self.model.generate(
                input_ids=input_ids.to(self.model.device),
                attention_mask=attention_mask.to(self.model.device),
                num_beams=options.num_beams,
                length_penalty=options.length_penalty,
                max_length=options.max_length,
            )
        return outputs[:, 1:].tolist()  # without the decoder's start token; padding is a special, dropped at decoding


class CTranslate2Engine:
    """Translates with a CTranslate2 `Translator` over a folder written by `export_model(..., "ctranslate2", ...)`."""

    def __init__(self, path: str | Path, tokenizer, device: str = "cpu", threads: int | None = None,
                 parallel_batches: int = 1):
        import ctranslate2

        info = read_export_info(path)
        self.translator = ctranslate2.Translator(
            str(path), device=device, intra_threads=threads_per_batch(threads, parallel_batches), inter_threads=parallel_batches
        )
        self.parallel_batches = parallel_batches
        self.tokenizer = tokenizer
        self.max_source_length = info["config"]["max_position_embeddings"]
        self.generation_config = GenerationConfig.from_pretrained(path)

    def decoding_options(self, **overrides) -> DecodingOptions:
        return decoding_options(self.generation_config, **overrides)

    def translate_ids(self, sources: list[list[int]], options: DecodingOptions) -> list[list[int]]:
        # A multilingual model's target language: generate()'s forced first token is CTranslate2's target prefix
        forced = self.generation_config.forced_bos_token_id
        prefix = [[self.tokenizer.convert_ids_to_tokens(forced)]] * len(sources) if forced is not None else None
        # generate()'s bad words (opus-mt's <pad>, its decoder start) are never generated here either
        suppressed = [self.tokenizer.convert_ids_to_tokens(ids) for ids in self.generation_config.bad_words_ids or []]
        results = self.translator.translate_batch(
            [self.tokenizer.convert_ids_to_tokens(ids) for ids in sources],
            target_prefix=prefix,
            suppress_sequences=suppressed or None,
            beam_size=options.num_beams,
            length_penalty=options.length_penalty,
            # CTranslate2 counts the generated tokens with the end of sentence, generate() the start token too
            max_decoding_length=options.max_length - 1,
            max_batch_size=len(sources),
        )
        return [self.tokenizer.convert_tokens_to_ids(result.hypotheses[0]) for result in results]


def decoding_options(generation_config: GenerationConfig, **overrides) -> DecodingOptions:
    """The model's generation settings, with `num_beams`, `length_penalty`, `max_length` or `max_new_tokens` given
    by the caller taking precedence (None leaves a setting as it is)."""
    unknown = set(overrides) - {"num_beams", "length_penalty", "max_length", "max_new_tokens"}
    if unknown:
        raise TypeError(f"Unknown decoding options {sorted(unknown)}: use num_beams, length_penalty, max_length or max_new_tokens.")
    given = {name: value for name, value in overrides.items() if value is not None}
    if "max_new_tokens" in given:
        given["max_length"] = given.pop("max_new_tokens") + 1
    defaults = DecodingOptions()
    return DecodingOptions(
        num_beams=given.get("num_beams", generation_config.num_beams or defaults.num_beams),
        length_penalty=given.get("length_penalty", generation_config.length_penalty or defaults.length_penalty),
        max_length=given.get("max_length", generation_config.max_length or defaults.max_length),
    )


def use_languages(engine, tokenizer, source_lang: str | None, target_lang: str | None) -> None:
    """A multilingual model (NLLB, M2M100) translates between the languages given as its tokenizer's codes
    (deu_Latn for NLLB, de for M2M100): sources are tagged with the source's, and the target's is the first
    generated token. A model of one language pair needs nothing."""
    if not is_multilingual(tokenizer):
        return
    if source_lang is None or target_lang is None:
        raise ValueError(
            f"This model translates between many languages: give --source_lang and --target_lang as its tokenizer's "
            f"language codes (now {tokenizer.src_lang} -> {tokenizer.tgt_lang}, e.g. deu_Latn and eng_Latn for NLLB)."
        )
    use_language_codes(tokenizer, engine.generation_config, source_lang, target_lang)


def threads_per_batch(threads: int | None, parallel_batches: int) -> int:
    """Each of `parallel_batches` batches in flight gets an equal share of `threads` (default: torch's)."""
    return max(1, (threads or torch.get_num_threads()) // parallel_batches)


def pad_right(sources: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(len(ids) for ids in sources)
    input_ids = torch.full((len(sources), longest), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sources), longest), dtype=torch.long)
    for row, ids in enumerate(sources):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
    return input_ids, attention_mask


def as_engine(model):
    """`model` if it is an engine already, else an engine over a model that `generate()`s."""
    return model if hasattr(model, "translate_ids") else GenerateEngine(model)


def read_export_info(path: str | Path) -> dict:
    info = Path(path) / EXPORT_INFO
    if not info.is_file():
        raise FileNotFoundError(
            f"{path} is not an exported model: it has no {EXPORT_INFO}. Export a saved model first with "
            f"`python scripts/export.py --model MODEL --format ctranslate2|onnx --output_dir {path}`."
        )
    return json.loads(info.read_text())


def detect_engine(path: str | Path) -> str:
    """The engine for a model folder: the export's format for an exported folder, else PyTorch."""
    if (Path(path) / EXPORT_INFO).is_file():
        return {"ctranslate2": "ctranslate2", "onnx": "onnxruntime", "web": "onnxruntime"}[read_export_info(path)["format"]]
    return "torch"


def load_engine(path: str, engine: str = "auto", device: str = "cpu", dtype: torch.dtype = torch.float32,
                revision: str | None = None, threads: int | None = None, parallel_batches: int = 1):
    """(engine, tokenizer) for a saved model (a folder or a Hub id) or an exported folder; `engine="auto"` picks the
    one the folder was made for. `threads` (default: torch's) are shared among `parallel_batches` batches translated
    at once; the torch engine sets torch's thread count, which is the process's."""
    if engine not in ENGINES:
        raise ValueError(f"Unknown engine {engine!r}; choose one of {', '.join(ENGINES)}.")
    if parallel_batches < 1:
        raise ValueError(f"parallel_batches must be at least 1 (one batch at a time), not {parallel_batches}.")
    found = detect_engine(path) if Path(path).is_dir() else "torch"
    if engine == "auto":
        engine = found
    elif engine != found:
        raise ValueError(
            f"{path} holds a model for the {found} engine, not for {engine}. Use --engine {found} (or auto), or "
            f"export the saved model with `scripts/export.py --format "
            f"{'onnx' if engine == 'onnxruntime' else engine}`."
        )
    tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
    if engine == "ctranslate2":
        return CTranslate2Engine(path, tokenizer, device.split(":")[0], threads, parallel_batches), tokenizer
    if engine == "onnxruntime":
        from .onnx_engine import OnnxRuntimeSeq2SeqLM

        model = OnnxRuntimeSeq2SeqLM(path, read_export_info(path), threads=threads_per_batch(threads, parallel_batches))
        return GenerateEngine(model, parallel_batches), tokenizer
    if threads or parallel_batches > 1:
        torch.set_num_threads(threads_per_batch(threads, parallel_batches))
    model = AutoModelForSeq2SeqLM.from_pretrained(path, revision=revision, dtype=dtype).to(device).eval()
    return GenerateEngine(model, parallel_batches), tokenizer
