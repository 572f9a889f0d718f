"""Tokenizing a corpus once. Its sentence pairs are read a chunk at a time, checked, tokenized and appended to an
Arrow file in a cache folder; every later use memory-maps that file: a rerun, a resumed run, an evaluation run and
every other process of a multi-process run (fairseq's binarized, memory-mapped datasets do the same). Memory holds a
chunk, never the corpus, and the OS pages the table in as batches touch it.

The cache folder is named by a hash of everything that decides its content: the data (files' paths, sizes and
modification times, or a Hub dataset's fingerprint), the tokenizer's saved files, the languages, the max lengths and
the filter. A folder appears whole or not at all: it is built under another name and renamed when complete, under a
file lock that makes the other processes wait for it instead of tokenizing again. A folder damaged later from outside
(a truncated or emptied table, deleted metadata) is found when it is opened, logged with its folder, and built again.
"""

import dataclasses
import gc
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets.arrow_writer import ArrowWriter
from filelock import FileLock
from tokenizers import Tokenizer
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from .translation_data import PairChunk, ParallelTextFiles, TranslationRecords

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1  # raised whenever what a cache folder holds changes, so that older folders are never read as new
CHUNK_PAIRS = 5000  # pairs read, checked, tokenized and written at a time
TOKEN_IDS = pa.list_(pa.int32())
FEATURES = datasets.Features(
    {"input_ids": datasets.List(datasets.Value("int32")), "labels": datasets.List(datasets.Value("int32"))}
)
DROP_REASONS = ("empty side", "too long", "length ratio")


def default_cache_root() -> Path:
    """Beside the `datasets` library's own cache (HF_DATASETS_CACHE, ~/.cache/huggingface/datasets by default)."""
    return Path(datasets.config.HF_DATASETS_CACHE) / "vanilla_transformer" / "tokenized"


@dataclass(frozen=True)
class PairFilter:
    """The pairs of a crawled corpus that training drops, instead of refusing the corpus (`--filter_pairs`): a side
    that is empty, a side longer than its max length in tokens (instead of truncating it), and sides whose token
    counts differ by more than `max_length_ratio` times (a misaligned pair, or one side in another language)."""

    max_length_ratio: float = 3.0

    def __post_init__(self):
        if self.max_length_ratio < 1:
            raise ValueError(f"The length ratio of a filter is at least 1 (equal lengths), got {self.max_length_ratio}.")


class PairEncoder:
    """Token ids of sources and targets, exactly as `tokenizer(sources, text_target=targets, max_length=...,
    max_target_length=..., truncation=truncate)` gives them.

    A fast tokenizer with no target mode of its own runs through its Rust backend directly: the same ids without the
    wrapper's Python objects for every sentence (1.5x the pairs/s on Multi30k), its batches spread over every core
    by the tokenizers library."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_source_length: int, max_target_length: int, truncate: bool):
        self.tokenizer = tokenizer
        self.max_source_length, self.max_target_length, self.truncate = max_source_length, max_target_length, truncate
        self.backends = None
        if tokenizer.is_fast and not hasattr(tokenizer, "_switch_to_target_mode"):
            self.backends = (self._backend(max_source_length), self._backend(max_target_length))

    def _backend(self, max_length: int) -> Tokenizer:
        # A copy, set up as the wrapper sets its own before encoding: the user's tokenizer keeps its settings
        backend = Tokenizer.from_str(self.tokenizer.backend_tokenizer.to_str())
        backend.no_padding()
        if self.truncate:
            backend.enable_truncation(max_length, strategy="longest_first", direction=self.tokenizer.truncation_side)
        else:
            backend.no_truncation()
        backend.encode_special_tokens = self.tokenizer.split_special_tokens
        return backend

    def __call__(self, sources: list[str], targets: list[str]) -> tuple[pa.Array, pa.Array]:
        if self.backends is None:
            encoded = self.tokenizer(
                sources,
                text_target=targets,
                max_length=self.max_source_length,
                max_target_length=self.max_target_length,
                truncation=self.truncate,
            )
            ids = encoded["input_ids"], encoded["labels"]
        else:
            ids = [[e.ids for e in backend.encode_batch_fast(texts)] for backend, texts in zip(self.backends, (sources, targets))]
        return pa.array(ids[0], TOKEN_IDS), pa.array(ids[1], TOKEN_IDS)


_worker_encoder: PairEncoder | None = None  # a worker process's own copy, set once when the process starts


def _start_worker(encoder: PairEncoder) -> None:
    global _worker_encoder
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # the processes are the parallelism
    _worker_encoder = encoder


def _encode_in_worker(sources: list[str], targets: list[str]) -> tuple[pa.Array, pa.Array]:
    return _worker_encoder(sources, targets)


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def encoded_in_order(work: Iterator[tuple], encoder: PairEncoder, num_workers: int) -> Iterator[tuple]:
    """`(item, encoder(sources, targets))` for each `(item, sources, targets)` of `work`, in order. With
    `num_workers` > 1 and more than one chunk of work, that many processes encode while this one reads on (on 2
    cores, 1.5x the pairs/s of one process whose tokenizer runs on both); at most 2 chunks per process wait, so memory
    stays bounded however fast the files are read."""
    work = iter(work)
    first = list(islice(work, 2))
    # Without fork (Windows), the tokenizer's own threads are the parallelism
    if num_workers <= 1 or len(first) < 2 or "fork" not in multiprocessing.get_all_start_methods():
        for item, sources, targets in chain(first, work):
            yield item, encoder(sources, targets)
        return
    # Forked, as `datasets.map(num_proc=...)` does: spawned processes would import the caller's main module again.
    # Frozen objects are left alone by the workers' garbage collector, so the pages they share with this process
    # stay shared instead of being copied into each worker
    context = multiprocessing.get_context("fork")
    gc.freeze()  # until the workers end: they are started at the first submit
    try:
        with ProcessPoolExecutor(num_workers, mp_context=context, initializer=_start_worker, initargs=(encoder,)) as pool:
            pending = deque()
            for item, sources, targets in chain(first, work):
                pending.append((item, pool.submit(_encode_in_worker, sources, targets)))
                if len(pending) > 2 * num_workers:
                    item, future = pending.popleft()
                    yield item, future.result()
            while pending:
                item, future = pending.popleft()
                yield item, future.result()
    finally:
        gc.unfreeze()


@dataclass
class TokenizedCorpus:
    """A tokenized split: its memory-mapped table (`input_ids`, `labels`) and what building it found."""

    name: str
    dataset: datasets.Dataset
    folder: Path
    built: bool  # False: found in the cache
    summary: dict  # pairs read and kept, dropped by reason, seconds and pairs/s of the build

    def write_dropped_report(self, output_dir: str | Path) -> Path | None:
        """Copies the line numbers of the dropped pairs, with their reasons, to `output_dir`."""
        if not sum(self.summary["dropped"].values()):
            return None
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        report = Path(output_dir) / f"dropped_{self.name}_pairs.tsv"
        shutil.copyfile(self.folder / "dropped_pairs.tsv", report)
        return report


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """A hash of the files the tokenizer saves: equal for every copy of the same tokenizer, of any kind."""
    digest = hashlib.sha256()
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        for path in sorted(Path(folder).iterdir()):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def tokenize_once(
    pairs: ParallelTextFiles | TranslationRecords,
    tokenizer: PreTrainedTokenizerBase,
    name: str,
    max_source_length: int,
    max_target_length: int,
    pair_filter: PairFilter | None = None,
    cache_root: str | Path | None = None,
    overwrite: bool = False,
    num_workers: int | None = None,
    filter_flag: str = "--filter_pairs",
    chunk_pairs: int = CHUNK_PAIRS,
) -> TokenizedCorpus:
    """The tokenized pairs of `pairs`, from the cache or built into it. Without a filter, sources and targets longer
    than their max lengths are truncated and a pair with an empty side is refused (naming `filter_flag`, when given,
    as the way to drop such pairs); with one, the pairs it names are dropped and their line numbers kept.
    `num_workers` processes tokenize (default: one per core; 1: this process, the tokenizer's own threads)."""
    key = {
        "format": CACHE_FORMAT,
        "pairs": pairs.identity(),
        "languages": [pairs.source_lang, pairs.target_lang],
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "max_lengths": [max_source_length, max_target_length],
        "filter": dataclasses.asdict(pair_filter) if pair_filter else None,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    root.mkdir(parents=True, exist_ok=True)
    folder = root / f"{name}-{digest}"
    with FileLock(str(folder) + ".lock"):
        built = overwrite or not folder.exists()
        if not built:
            try:
                dataset, summary = open_cache(folder)
            except DamagedCache as damage:
                logger.warning("The tokenized %s data cached in %s is damaged (%s): tokenizing it again", name, folder, damage)
                built = True
        if built:
            encoder = PairEncoder(tokenizer, max_source_length, max_target_length, truncate=pair_filter is None)
            workers = available_cores() if num_workers is None else num_workers
            _build(pairs, encoder, name, pair_filter, key, folder, workers, filter_flag, chunk_pairs)
            dataset, summary = open_cache(folder)
    corpus = TokenizedCorpus(name, dataset, folder, built, summary)
    log_corpus(corpus)
    return corpus


class DamagedCache(RuntimeError):
    """A cache folder that was built whole but has been damaged since, from outside (a disk that filled while
    copying it, a half-synced shared filesystem, a truncated file)."""


def open_cache(folder: Path) -> tuple[datasets.Dataset, dict]:
    """The memory-mapped pairs of a cache folder and its summary, after checking that the folder is as it was built:
    its files present, `data.arrow` of the size recorded when it was built, readable, with the recorded number of
    pairs. Raises `DamagedCache` naming what is wrong."""
    for file in ("key.json", "summary.json", "data.arrow"):
        if not (folder / file).is_file():
            raise DamagedCache(f"{file} is missing")
    try:
        summary = json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError) as error:
        raise DamagedCache(f"summary.json does not read: {error}") from None
    size = (folder / "data.arrow").stat().st_size
    if summary.get("data_bytes", size) != size:  # caches of 0.2.0 recorded no size: their table is still checked
        raise DamagedCache(f"data.arrow has {size:,} bytes, {summary['data_bytes']:,} when it was built")
    try:
        dataset = datasets.Dataset.from_file(str(folder / "data.arrow"))
    except Exception as error:  # pyarrow's error for a table that does not read, whatever its kind
        raise DamagedCache(f"data.arrow does not read: {error}") from None
    if len(dataset) != summary.get("kept"):
        raise DamagedCache(f"data.arrow holds {len(dataset):,} pairs, {summary.get('kept')} when it was built")
    return dataset, summary


def log_corpus(corpus: TokenizedCorpus) -> None:
    summary = corpus.summary
    if corpus.built:
        logger.info(
            "Tokenized the %s data: %s pairs in %.1f s (%s pairs/s); cached in %s",
            corpus.name, f"{summary['kept']:,}", summary["seconds"], f"{summary['pairs_per_second']:,.0f}", corpus.folder,
        )
    else:
        logger.info(
            "Reusing the tokenized %s data (%s pairs) cached in %s; --overwrite_cache tokenizes it again",
            corpus.name, f"{summary['kept']:,}", corpus.folder,
        )
    if sum(summary["dropped"].values()):
        counts = ", ".join(f"{count:,} for {reason}" for reason, count in summary["dropped"].items() if count)
        logger.info("Dropped %s of %s %s pairs: %s", f"{summary['read'] - summary['kept']:,}", f"{summary['read']:,}", corpus.name, counts)


def _build(pairs, encoder: PairEncoder, name: str, pair_filter: PairFilter | None, key: dict, folder: Path,
           num_workers: int, filter_flag: str, chunk_pairs: int) -> None:
    """Writes the tokenized pairs into a new folder, then puts it in `folder`'s place (the caller holds the lock)."""
    for leftover in folder.parent.glob(f".{folder.name}.*.building"):  # from a build that was killed
        shutil.rmtree(leftover, ignore_errors=True)
    building = folder.parent / f".{folder.name}.{uuid.uuid4().hex[:8]}.building"
    building.mkdir()
    try:
        start = time.perf_counter()
        hint = f", or pass {filter_flag} to drop every such pair" if filter_flag else ""
        screened = (screen_chunk(chunk, pairs, name, pair_filter is not None, hint) for chunk in pairs.chunks(chunk_pairs))
        dropped = dict.fromkeys(DROP_REASONS, 0)
        read = kept = 0
        writer = ArrowWriter(features=FEATURES, path=str(building / "data.arrow"))
        with open(building / "dropped_pairs.tsv", "w", encoding="utf-8") as report, tqdm(
            desc=f"Tokenizing the {name} data", unit=" pairs", disable=None
        ) as progress:
            report.write("line\treason\n")
            for (lines, blank_lines), (source_ids, target_ids) in encoded_in_order(screened, encoder, num_workers):
                rejected = {"empty side": blank_lines}
                if pair_filter is not None:
                    keep, rejected = filter_lengths(source_ids, target_ids, encoder, pair_filter, lines, rejected)
                    source_ids, target_ids = source_ids.filter(pa.array(keep)), target_ids.filter(pa.array(keep))
                writer.write_table(pa.table({"input_ids": source_ids, "labels": target_ids}))
                rows = sorted((int(line), reason) for reason, numbers in rejected.items() for line in numbers)
                report.writelines(f"{line}\t{reason}\n" for line, reason in rows)
                for reason, numbers in rejected.items():
                    dropped[reason] += len(numbers)
                read += len(lines) + len(blank_lines)
                kept += len(source_ids)
                progress.update(len(lines) + len(blank_lines))
        writer.finalize()
        if kept == 0:
            detail = f" that survive the filter (read {read:,}, dropped {dropped})" if read else ""
            raise ValueError(f"The {name} data holds no sentence pairs{detail}.")
        seconds = time.perf_counter() - start
        summary = {"read": read, "kept": kept, "dropped": dropped, "seconds": round(seconds, 2),
                   "pairs_per_second": round(read / seconds, 1), "data_bytes": (building / "data.arrow").stat().st_size}
        (building / "key.json").write_text(json.dumps(key, indent=1) + "\n")
        (building / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")  # written last: marks it whole
        if folder.exists():  # --overwrite_cache; a process still reading the old files keeps them open
            shutil.rmtree(folder)
        os.replace(building, folder)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise


def screen_chunk(chunk: PairChunk, pairs, name: str, filtering: bool, hint: str) -> tuple:
    """`((line numbers of the pairs to tokenize, of the pairs with an empty side), sources, targets)`. Without
    filtering, an empty or missing side refuses the corpus (it would train the model to translate something into
    nothing)."""
    blank = np.fromiter(
        (is_blank(s) or is_blank(t) for s, t in zip(chunk.sources, chunk.targets)), dtype=bool, count=len(chunk.sources)
    )
    lines = np.arange(chunk.first_line, chunk.first_line + len(chunk.sources))
    if blank.any() and not filtering:
        row = int(np.argmax(blank))
        lang = pairs.source_lang if is_blank(chunk.sources[row]) else pairs.target_lang
        text = (chunk.sources if lang == pairs.source_lang else chunk.targets)[row]
        record = chunk.first_line - 1 + row
        raise ValueError(
            f"{'Missing' if text is None else 'Empty'} {lang} sentence in the {name} data, record {record} (line "
            f"{record + 1} of a text file). Remove the pair or fill it in{hint}."
        )
    if not blank.any():
        return (lines, lines[:0]), chunk.sources, chunk.targets
    sources = [s for s, drop in zip(chunk.sources, blank) if not drop]
    targets = [t for t, drop in zip(chunk.targets, blank) if not drop]
    return (lines[~blank], lines[blank]), sources, targets


def is_blank(text: str | None) -> bool:
    return text is None or not text.strip()


def filter_lengths(source_ids: pa.Array, target_ids: pa.Array, encoder: PairEncoder, pair_filter: PairFilter,
                   lines: np.ndarray, rejected: dict) -> tuple[np.ndarray, dict]:
    """Which pairs to keep, and the line numbers of the others by reason: a side longer than its max length, or a
    longer side more than `max_length_ratio` times the shorter."""
    source_lengths = pc.list_value_length(source_ids).to_numpy()
    target_lengths = pc.list_value_length(target_ids).to_numpy()
    too_long = (source_lengths > encoder.max_source_length) | (target_lengths > encoder.max_target_length)
    shorter = np.maximum(np.minimum(source_lengths, target_lengths), 1)
    ratio = ~too_long & (np.maximum(source_lengths, target_lengths) > pair_filter.max_length_ratio * shorter)
    rejected = {**rejected, "too long": lines[too_long], "length ratio": lines[ratio]}
    return ~(too_long | ratio), rejected
