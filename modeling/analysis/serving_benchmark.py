"""The real serving workload: a trained model translating a test set, every way this package serves it, against
`translate()` on PyTorch in the same run: the naive input-order loop, MarianMTModel (the same weights), CTranslate2
and ONNX Runtime (float32 and int8) and, where Node runs it, transformers.js. Reports seconds, sentences/s, BLEU and
chrF, and how many lines equal `translate()`'s."""

import json
import subprocess
import time
from pathlib import Path

import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from ..conversion.marian import to_marian
from ..data.translation_data import read_lines
from ..serving.engines import GenerateEngine, load_engine, threads_per_batch
from ..serving.exports import export_model
from ..serving.translation import translate
from ..training.evaluation import load_translation_metric


SERVING_PATHS = ("translate", "translate-parallel", "input-order loop", "marian", "ctranslate2-float32", "ctranslate2-int8", "onnxruntime",
                 "onnxruntime-int8")
TRANSFORMERS_JS_PATHS = ("transformers.js", "transformers.js-int8")  # greedy only, where Node runs it


def transformers_js_translate(script: str, folder: Path, sentences: list[str], dtype: str) -> tuple[list[str], float]:
    """Translations and seconds (the model loaded) of transformers.js in Node over an ONNX export, one sentence per
    call (tests/web/translate.mjs)."""
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        source, output = Path(scratch) / "source.txt", Path(scratch) / "output.json"
        source.write_text("\n".join(sentences) + "\n")
        subprocess.run(["node", script, str(folder), str(source), str(output), dtype], check=True, capture_output=True)
        result = json.loads(output.read_text())
    return result["translations"], result["seconds"]


def input_order_loop(model, tokenizer, sentences: list[str], num_beams: int, batch_size: int = 32) -> list[str]:
    """The naive way, and this package's translate() before it batched by length: batches of `batch_size` sentences
    in input order, each padded to its longest, through `generate()`."""
    translations = []
    for start in range(0, len(sentences), batch_size):
        inputs = tokenizer(sentences[start : start + batch_size], return_tensors="pt", padding=True)
        with torch.inference_mode():
            outputs = model.generate(**inputs, num_beams=num_beams)
        translations += [text.strip() for text in tokenizer.batch_decode(outputs, skip_special_tokens=True)]
    return translations


def serving_benchmark(model_dir: str, source_file: str, reference_file: str, export_dir: str, threads: int,
                      beams=(4, 1), repeats: int = 1, transformers_js_script: str | None = None,
                      parallel_batches: int = 1) -> dict:
    """The real workload: translating a test set with a trained model, every path on the same sentences, in one
    process, interleaved (all paths for one beam size, then the next, `repeats` times; the fastest run counts):
    our `translate()` (sorted by length, token budgets) on PyTorch, the input-order loop of `generate()` calls,
    `MarianMTModel` holding the same weights (through `translate()`, so that the models alone differ), CTranslate2
    float32 and int8 and ONNX Runtime float32 and int8 over our exports (through `translate()`); with
    `transformers_js_script` (and `node`), transformers.js in Node over the ONNX export, greedy, one sentence per
    call. Figures: seconds, translated tokens per second, BLEU / chrF against the references, and lines identical to
    our `translate()`.

    With `parallel_batches` > 1 the CTranslate2 and ONNX Runtime engines translate that many batches at once, sharing
    `threads`, and "translate-parallel" is PyTorch doing the same, so that each engine is also compared with
    PyTorch under the same conditions; "translate" stays the reference, one batch at a time on all `threads`."""
    torch.set_num_threads(threads)
    sources, references = read_lines(source_file), read_lines(reference_file)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir).eval()
    marian = to_marian(model)
    folders = {}
    for name, fmt, quantization in (("ctranslate2-float32", "ctranslate2", None), ("ctranslate2-int8", "ctranslate2", "int8"),
                                    ("onnxruntime", "onnx", None), ("onnxruntime-int8", "onnx", "int8")):
        folders[name] = Path(export_dir) / name
        if not (folders[name] / "export.json").is_file():
            export_model(model_dir, fmt, folders[name], quantization)
    engines = {name: load_engine(str(folder), threads=threads, parallel_batches=parallel_batches)[0]
               for name, folder in folders.items()}

    def torch_translate(sentences, beams, batches_at_once=1):
        torch.set_num_threads(threads_per_batch(threads, batches_at_once))  # the process's, set per path
        return list(translate(GenerateEngine(model, batches_at_once), tokenizer, sentences, num_beams=beams))

    paths = {
        "translate": torch_translate,
        **({"translate-parallel": lambda sentences, beams: torch_translate(sentences, beams, parallel_batches)}
           if parallel_batches > 1 else {}),
        "input-order loop": lambda sentences, beams: input_order_loop(model, tokenizer, sentences, beams),
        **{
            name: (lambda sentences, beams, engine=engine: list(translate(engine, tokenizer, sentences, num_beams=beams)))
            for name, engine in (("marian", marian), *engines.items())
        },
    }
    metric = load_translation_metric()
    summary = {"model": model_dir, "sentences": len(sources), "threads": threads, "parallel_batches": parallel_batches,
               "results": {}}
    for beams in beams:
        for function in paths.values():  # warm-up: the first calls of each path set up kernels and memory
            torch.set_num_threads(threads)
            function(sources[:64], beams)
        runs = {name: [] for name in paths}
        outputs = {}
        for _ in range(repeats):
            for name, function in paths.items():
                torch.set_num_threads(threads)  # translate-parallel lowers it for itself
                start = time.perf_counter()
                outputs[name] = function(sources, beams)
                runs[name].append(time.perf_counter() - start)
        if beams == 1 and transformers_js_script:
            for name, dtype in zip(TRANSFORMERS_JS_PATHS, ("fp32", "q8")):
                outputs[name], seconds = transformers_js_translate(transformers_js_script, folders["onnxruntime-int8"], sources, dtype)
                runs[name] = [seconds]
        entry = {}
        for name in runs:
            seconds = min(runs[name])
            tokens = sum(len(ids) for ids in tokenizer(outputs[name], add_special_tokens=False)["input_ids"])
            scores = metric.compute(predictions=outputs[name], references=[[r] for r in references])
            entry[name] = {
                "seconds": seconds, "tokens_per_second": tokens / seconds, "bleu": scores["bleu"], "chrf": scores["chrf"],
                "identical_to_translate": sum(a == b for a, b in zip(outputs[name], outputs["translate"])),
            }
        entry["ratios"] = {
            "translate_speedup_over_input_order_loop": entry["input-order loop"]["seconds"] / entry["translate"]["seconds"],
            "translate_time_over_ctranslate2_float32": entry["translate"]["seconds"] / entry["ctranslate2-float32"]["seconds"],
            "ctranslate2_int8_speedup_over_input_order_loop": entry["input-order loop"]["seconds"] / entry["ctranslate2-int8"]["seconds"],
            "ctranslate2_int8_bleu_minus_translate": entry["ctranslate2-int8"]["bleu"] - entry["translate"]["bleu"],
            "translate_speedup_over_marian": entry["marian"]["seconds"] / entry["translate"]["seconds"],
            "onnxruntime_speedup_over_translate": entry["translate"]["seconds"] / entry["onnxruntime"]["seconds"],
            "onnxruntime_int8_speedup_over_translate": entry["translate"]["seconds"] / entry["onnxruntime-int8"]["seconds"],
            "onnxruntime_int8_bleu_minus_translate": entry["onnxruntime-int8"]["bleu"] - entry["translate"]["bleu"],
        }
        if "translate-parallel" in entry:
            for name in ("onnxruntime", "onnxruntime-int8", "ctranslate2-int8"):
                entry["ratios"][f"{name.replace('-', '_')}_speedup_over_translate_parallel"] = (
                    entry["translate-parallel"]["seconds"] / entry[name]["seconds"]
                )
        summary["results"][f"beam{beams}" if beams > 1 else "greedy"] = entry
    return summary


def format_serving_table(summary: dict) -> str:
    lines = [f"{summary['model']}: {summary['sentences']} sentences, {summary['threads']} threads, "
             f"{summary.get('parallel_batches', 1)} batch(es) at once (engines; translate: 1)"]
    for mode, entry in summary["results"].items():
        lines.append(f"{mode:<22} {'seconds':>8} {'tokens/s':>9} {'BLEU':>6} {'chrF':>6} {'identical':>10}")
        for name in (*SERVING_PATHS, *TRANSFORMERS_JS_PATHS):
            if name not in entry:
                continue
            r = entry[name]
            lines.append(
                f"  {name:<20} {r['seconds']:>8.2f} {r['tokens_per_second']:>9.0f} {r['bleu']:>6.1f} {r['chrf']:>6.1f} "
                f"{r['identical_to_translate']:>5}/{summary['sentences']}"
            )
        lines.append("  " + ", ".join(f"{k} {v:.2f}" for k, v in entry["ratios"].items()))
    return "\n".join(lines)
