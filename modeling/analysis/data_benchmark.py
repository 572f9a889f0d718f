"""How the data side scales: a corpus of N pairs (a given corpus repeated or cut to N) trained on with
`run_translation`, as a user runs it, in fresh processes:

- cold start: from launching the process to the end of the first training step, with no tokenized cache (reading,
  checking and tokenizing the corpus, the model, the first batch and step);
- warm start: the same command again, the cache present (a rerun, a resumed run, another process);
- tokenizing: pairs per second of the cold start's build (from its cache's summary);
- memory, sampled every 50 ms from /proc by this process: the peak anonymous (private) memory of the training
  process, and apart from it its peak of file-backed memory (the memory-mapped cache and libraries, which the OS can
  drop and read again); the tokenizing worker processes' private memory at their peak, summed;
- whether the data loader keeps ahead: seconds to draw a batch from the training loader (once the epoch's order is
  drawn) against a training step;
- with `processes=2`, the cold start under `torchrun --nproc_per_node 2`: how many of the processes tokenized
  (one should) and each one's peak.
The model is the README's Multi30k model (d_model 256, 3+3 layers) with a BPE of 8000 tokens, batches of 1024 tokens.
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from itertools import cycle, islice
from pathlib import Path

from ..data.tokenization import train_bpe_tokenizer
from ..data.translation_data import iter_lines, parallel_file

MODEL = (
    "d_model=256,encoder_layers=3,decoder_layers=3,encoder_attention_heads=4,decoder_attention_heads=4,"
    "encoder_ffn_dim=1024,decoder_ffn_dim=1024,max_position_embeddings=256"
)
STEPS = 12  # the first step, then steps to time one by
LOADER_BATCHES = 200
MiB = 2**20


def write_corpus(prefix: str | Path, langs: tuple[str, str], pairs: int, output: Path) -> Path:
    """`{output}.{lang}`: the pairs of `prefix` repeated (or cut) to `pairs` lines, streamed to disk."""
    for lang in langs:
        lines = cycle(iter_lines(parallel_file(prefix, lang))) if pairs else iter_lines(parallel_file(prefix, lang))
        with open(f"{output}.{lang}", "w", encoding="utf-8") as handle:
            handle.writelines(line + "\n" for line in islice(lines, pairs))
    return output


class MemorySampler:
    """Samples a process and its children from /proc until it ends: anonymous and file-backed resident memory of
    the process, and the private memory of its children (tokenizing workers), each at its peak."""

    def __init__(self, pid: int, interval: float = 0.05):
        self.pid, self.interval = pid, interval
        self.peak = {"anon": 0, "file": 0, "workers_private": 0}
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while Path(f"/proc/{self.pid}").exists():
            try:
                status = _status_fields(self.pid)
                workers = sum(_private_bytes(child) for child in _children(self.pid))
            except (FileNotFoundError, ProcessLookupError):
                break
            self.peak["anon"] = max(self.peak["anon"], status.get("RssAnon", 0))
            self.peak["file"] = max(self.peak["file"], status.get("RssFile", 0))
            self.peak["workers_private"] = max(self.peak["workers_private"], workers)
            time.sleep(self.interval)

    def stop(self) -> dict:
        self.thread.join()
        return {key: round(value / MiB) for key, value in self.peak.items()}


def _status_fields(pid: int) -> dict[str, int]:
    fields = {}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            name, _, value = line.partition(":")
            if value.strip().endswith("kB"):
                fields[name] = int(value.split()[0]) * 1024
    return fields


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


def _private_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            return sum(int(line.split()[1]) * 1024 for line in handle if line.startswith(("Private_Clean", "Private_Dirty")))
    except (FileNotFoundError, ProcessLookupError):
        return 0


def run_training(prefix: Path, langs: tuple[str, str], tokenizer: Path, cache: Path, output: Path, processes: int = 1) -> dict:
    """One training start in fresh process(es), measured from outside (memory) and inside (step times)."""
    arguments = {
        "train_file": str(prefix), "source_lang": langs[0], "target_lang": langs[1], "tokenizer_name": str(tokenizer),
        "tokenized_cache_dir": str(cache), "output_dir": str(output),
    }
    module = ["-m", "vanilla_transformer.analysis.data_benchmark", json.dumps(arguments)]
    launcher = ["-m", "torch.distributed.run", "--nproc_per_node", str(processes)] if processes > 1 else []
    command = [sys.executable, *launcher, *module]
    environment = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // processes))}
    launched = time.time()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
    # Under torchrun, the training processes are the launcher's children: sample each of them
    samplers, seen = {}, set()
    if processes == 1:
        samplers[process.pid] = MemorySampler(process.pid)
    while process.poll() is None and processes > 1:
        for pid in _children(process.pid):
            if pid not in seen:
                seen.add(pid)
                samplers[pid] = MemorySampler(pid)
        time.sleep(0.05)
    stdout, stderr = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"The training run failed ({process.returncode}):\n{stderr[-3000:]}")
    reports = [json.loads(line.removeprefix("DATA-BENCHMARK ")) for line in stdout.splitlines() if line.startswith("DATA-BENCHMARK ")]
    memory = [sampler.stop() for sampler in samplers.values()]
    result = {
        "processes": processes,
        "first_step_seconds": round(max(report["first_step_end"] for report in reports) - launched, 1),
        "step_seconds": statistics.median(report["step_seconds"] for report in reports),
        "loader_seconds_per_batch": statistics.median(report["loader_seconds_per_batch"] for report in reports),
        "built_by": sum("Tokenized the train data" in line for line in stderr.splitlines()),
        "reused_by": sum("Reusing the tokenized train data" in line for line in stderr.splitlines()),
        "peak_memory_mib": memory,
    }
    summaries = list(cache.glob("train-*/summary.json"))
    if summaries:
        result["tokenizing"] = json.loads(summaries[0].read_text())
    return result


def data_benchmark(source_prefix: str, langs: tuple[str, str], pair_counts: list[int], scratch: Path,
                   processes: int = 1) -> dict:
    """Cold and warm starts (and a cold start on `processes` processes) for a corpus of each size."""
    scratch.mkdir(parents=True, exist_ok=True)
    tokenizer = scratch / "tokenizer"
    if not (tokenizer / "tokenizer.json").is_file():
        sample = [line for lang in langs for line in islice(iter_lines(parallel_file(source_prefix, lang)), 200_000)]
        train_bpe_tokenizer(sample, vocab_size=8000).save_pretrained(tokenizer)
    results = []
    for pairs in pair_counts:
        prefix = write_corpus(source_prefix, langs, pairs, scratch / f"corpus-{pairs}")
        row = {"pairs": pairs, "corpus_mib": round(sum(Path(f"{prefix}.{lang}").stat().st_size for lang in langs) / MiB)}
        cache = scratch / f"cache-{pairs}"
        shutil.rmtree(cache, ignore_errors=True)
        row["cold"] = run_training(prefix, langs, tokenizer, cache, scratch / "run-cold")
        row["warm"] = run_training(prefix, langs, tokenizer, cache, scratch / "run-warm")
        if processes > 1:
            shutil.rmtree(cache)
            row[f"cold_{processes}_processes"] = run_training(prefix, langs, tokenizer, cache, scratch / "run-multi", processes)
        shutil.rmtree(cache)
        for lang in langs:
            os.remove(f"{prefix}.{lang}")
        results.append(row)
        print(format_data_table({"results": results}), flush=True)
    return {"source": str(source_prefix), "langs": list(langs), "model": MODEL, "cpus": os.cpu_count(), "results": results}


def tokenizer_throughput(source_prefix: str, langs: tuple[str, str], tokenizers: list[str], pairs: int, scratch: Path) -> list[dict]:
    """Pairs per second of the tokenize-once pipeline (`tokenize_once`, no cache yet) over the first `pairs` pairs, for
    each saved tokenizer (a folder or Hub id: a converted opus-mt's slow sentencepiece `MarianTokenizer`, NLLB's fast
    one, FSMT's Moses + BPE, ...), in one process and in one worker process per core."""
    from transformers import AutoTokenizer

    from ..data.tokenized_corpus import available_cores, tokenize_once
    from ..data.translation_data import ParallelTextFiles

    prefix = write_corpus(source_prefix, langs, pairs, scratch / f"corpus-{pairs}")
    rows = []
    for name in tokenizers:
        tokenizer = AutoTokenizer.from_pretrained(name)
        row = {"tokenizer": name, "class": type(tokenizer).__name__, "fast": tokenizer.is_fast, "pairs": pairs}
        for workers in (1, available_cores()):
            cache = scratch / "tokenizer-cache"
            shutil.rmtree(cache, ignore_errors=True)
            corpus = tokenize_once(ParallelTextFiles(str(prefix), *langs), tokenizer, "train", max_source_length=256,
                                   max_target_length=256, cache_root=cache, num_workers=workers)
            row[f"pairs_per_second_{workers}_processes"] = corpus.summary["pairs_per_second"]
        shutil.rmtree(cache, ignore_errors=True)
        rows.append(row)
    for lang in langs:
        os.remove(f"{prefix}.{lang}")
    return rows


def format_tokenizer_table(rows: list[dict]) -> str:
    workers = [key for key in rows[0] if key.startswith("pairs_per_second_")]
    lines = [
        "| tokenizer | class | " + " | ".join(key.removeprefix("pairs_per_second_").replace("_", " ") for key in workers) + " |",
        "| --- | --- | " + " | ".join("---" for _ in workers) + " |",
    ]
    for row in rows:
        cells = " | ".join(f"{row[key]:,.0f} pairs/s" for key in workers)
        lines.append(f"| {row['tokenizer']} | {row['class']}{'' if row['fast'] else ' (slow)'} | {cells} |")
    return "\n".join(lines)


def format_data_table(summary: dict) -> str:
    lines = [
        "| pairs | cold start to step 1 | warm start | tokenizing | peak private (anon) | file-backed | workers' private | loader s/batch vs step |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in summary["results"]:
        cold, warm = row["cold"], row["warm"]
        memory = cold["peak_memory_mib"][0]
        lines.append(
            f"| {row['pairs']:,} | {cold['first_step_seconds']:.0f} s | {warm['first_step_seconds']:.0f} s | "
            f"{cold['tokenizing']['pairs_per_second']:,.0f} pairs/s | {memory['anon']:,} MiB (warm {warm['peak_memory_mib'][0]['anon']:,}) | "
            f"{memory['file']:,} MiB | {memory['workers_private']:,} MiB | "
            f"{warm['loader_seconds_per_batch'] * 1000:.1f} ms vs {warm['step_seconds'] * 1000:.0f} ms |"
        )
        for key, multi in row.items():
            if key.startswith("cold_") and key.endswith("_processes"):
                each = ", ".join(f"{m['anon']:,}" for m in multi["peak_memory_mib"])
                lines.append(
                    f"| {row['pairs']:,}, {multi['processes']} processes | {multi['first_step_seconds']:.0f} s | | "
                    f"tokenized by {multi['built_by']}, reused by {multi['reused_by']} | {each} MiB each | | | |"
                )
    return "\n".join(lines)


def _measured_run(arguments: dict) -> None:
    """Inside the training process: `run_translation` as the script runs it, stopped after STEPS steps, reporting
    when the first step ended, the median step, and how fast the training loader draws batches."""
    from transformers import Seq2SeqTrainingArguments, TrainerCallback

    from ..training.trainer import (
        DataTrainingArguments,
        ModelArguments,
        log_progress_to_stderr,
        run_translation,
        use_cpu_when_no_accelerator,
    )

    class Timing(TrainerCallback):
        def __init__(self):
            self.ends = []

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.time())

        def on_train_end(self, args, state, control, train_dataloader=None, **kwargs):
            batches = iter(train_dataloader)
            next(batches)  # the epoch's order, drawn once per epoch, is not what each step waits for
            start = time.perf_counter()
            drawn = sum(1 for _ in islice(batches, LOADER_BATCHES))
            self.loader_seconds = (time.perf_counter() - start) / drawn

    use_cpu_when_no_accelerator()
    log_progress_to_stderr()
    timing = Timing()
    model_args = ModelArguments(tokenizer_name=arguments["tokenizer_name"], config_overrides=MODEL)
    data_args = DataTrainingArguments(
        source_lang=arguments["source_lang"], target_lang=arguments["target_lang"], train_file=arguments["train_file"],
        max_tokens_per_batch=1024, tokenized_cache_dir=arguments["tokenized_cache_dir"], overwrite_output_dir=True,
    )
    training_args = Seq2SeqTrainingArguments(
        output_dir=arguments["output_dir"], do_train=True, max_steps=STEPS, save_strategy="no", report_to="none",
        disable_tqdm=True, logging_steps=STEPS,
    )
    run_translation(model_args, data_args, training_args, callbacks=[timing])
    steps = [later - earlier for earlier, later in zip(timing.ends[1:], timing.ends[2:])]
    report = {"first_step_end": timing.ends[0], "step_seconds": statistics.median(steps), "loader_seconds_per_batch": timing.loader_seconds}
    print("DATA-BENCHMARK " + json.dumps(report), flush=True)


if __name__ == "__main__":
    _measured_run(json.loads(sys.argv[1]))
