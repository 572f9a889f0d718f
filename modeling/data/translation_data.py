"""Parallel data for translation: the sources of sentence pairs (parallel plain or .gz text files, JSON lines, Hub
datasets), read a chunk at a time and checked as they are read, and the paper's batching by tokens (section 5.1)."""

import gzip
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import islice, zip_longest
from pathlib import Path

import datasets
import numpy as np
import pyarrow.compute as pc
from torch.utils.data import Sampler

JSON_SUFFIXES = (".json", ".jsonl")


def iter_lines(path: str | Path) -> Iterator[str]:
    """The lines of a UTF-8 text file, plain or gzip-compressed, without their line endings. Lines end at "\\n" only
    (a "\\r\\n" ending is removed whole), so line N is what `wc -l`, Moses and fairseq call line N, even in a crawled
    file with a stray carriage return or Unicode line separator inside a sentence."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="\n") as handle:
        for line in handle:
            yield line.rstrip("\r\n")


def read_lines(path: str | Path) -> list[str]:
    """Every line of a small text file (a test set, a tokenizer sample): `iter_lines` as a list."""
    return list(iter_lines(path))


def parallel_file(prefix: str | Path, lang: str) -> Path:
    """`{prefix}.{lang}` or `{prefix}.{lang}.gz`, whichever exists."""
    for candidate in (Path(f"{prefix}.{lang}"), Path(f"{prefix}.{lang}.gz")):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"No {lang!r} side for {prefix}: neither {prefix}.{lang} nor {prefix}.{lang}.gz exists. Parallel text is given "
        "as a prefix whose files end in .<lang> or .<lang>.gz (one sentence per line), or as a .json/.jsonl file."
    )


@dataclass
class PairChunk:
    """Consecutive sentence pairs of a corpus; a side is None where a record lacks that language."""

    first_line: int  # the 1-based line (record number + 1) of the first pair
    sources: list[str | None]
    targets: list[str | None]


def file_identity(path: Path) -> list:
    """What tells that a file changed, without reading it: its resolved path, size and modification time."""
    stat = path.stat()
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]


class ParallelTextFiles:
    """`{prefix}.{source_lang}` and `{prefix}.{target_lang}` (each plain or .gz), line N translating line N, read a
    chunk at a time: memory holds one chunk, never the corpus."""

    def __init__(self, prefix: str | Path, source_lang: str, target_lang: str, limit: int | None = None):
        self.source_path, self.target_path = parallel_file(prefix, source_lang), parallel_file(prefix, target_lang)
        self.source_lang, self.target_lang, self.limit = source_lang, target_lang, limit

    def identity(self) -> dict:
        return {"files": [file_identity(self.source_path), file_identity(self.target_path)], "limit": self.limit}

    def chunks(self, size: int) -> Iterator[PairChunk]:
        every_pair = zip_longest(iter_lines(self.source_path), iter_lines(self.target_path))  # None: a file ended
        pairs = every_pair if self.limit is None else islice(every_pair, self.limit)
        line = 1
        while read := list(islice(pairs, size)):
            sources, targets = (list(side) for side in zip(*read))
            if sources[-1] is None or targets[-1] is None:
                self._refuse_unequal_lengths(line - 1, sources, targets, every_pair)
            yield PairChunk(line, sources, targets)
            line += len(read)

    def _refuse_unequal_lengths(self, before: int, sources: list, targets: list, rest: Iterator[tuple]) -> None:
        source_lines = before + sum(s is not None for s in sources)
        target_lines = before + sum(t is not None for t in targets)
        for source, target in rest:  # what is left of the longer file, counted as it is read
            source_lines += source is not None
            target_lines += target is not None
        raise ValueError(
            f"Parallel files differ in length: {self.source_path} has {source_lines} lines, {self.target_path} has "
            f"{target_lines}. Line N of one must translate line N of the other."
        )


class TranslationRecords:
    """A `datasets` table (memory-mapped: JSON lines, a Hub dataset) of `{"translation": {lang: text, ...}}` records,
    read a chunk at a time. Its columns and languages are checked when it is opened."""

    def __init__(self, dataset: datasets.Dataset, source_lang: str, target_lang: str, identity: dict, name: str,
                 limit: int | None = None):
        if "translation" not in dataset.column_names:
            raise ValueError(
                f"The {name} data has columns {dataset.column_names}; translation data needs a `translation` column of "
                '{"<source_lang>": text, "<target_lang>": text} records.'
            )
        languages = translation_languages(dataset.features["translation"])
        for lang in (source_lang, target_lang):
            if lang not in languages:
                raise ValueError(
                    f"Unknown language key {lang!r} in the {name} data: its records have {sorted(languages)}. "
                    "Set --source_lang / --target_lang to keys the data has."
                )
        if limit is not None:
            dataset = dataset.select(range(min(limit, len(dataset))))
        self.dataset, self.source_lang, self.target_lang = dataset, source_lang, target_lang
        self._identity = {**identity, "limit": limit}

    def identity(self) -> dict:
        return self._identity

    def chunks(self, size: int) -> Iterator[PairChunk]:
        line = 1
        for table in self.dataset.select_columns(["translation"]).with_format("arrow").iter(batch_size=size):
            records = table["translation"]
            sources = pc.struct_field(records, self.source_lang).to_pylist()
            targets = pc.struct_field(records, self.target_lang).to_pylist()
            yield PairChunk(line, sources, targets)
            line += len(sources)


def translation_languages(feature) -> list[str]:
    """The language keys of a `translation` column: a `datasets.Translation` feature or a struct of strings."""
    if isinstance(feature, datasets.Translation):
        return list(feature.languages)
    return list(feature)


def hub_split_records(dataset: datasets.Dataset, name: str, config: str | None, split: str, source_lang: str,
                      target_lang: str, limit: int | None = None) -> TranslationRecords:
    """The split `split` of the `datasets` translation dataset `name` / `config` (a Hub id such as `wmt/wmt14` with
    config `de-en`, or a local folder laid out as one), as `datasets.load_dataset` gave it: converted to Arrow once,
    memory-mapped from its cache after."""
    identity = {"hub": [name, config, split], "fingerprint": dataset._fingerprint}
    return TranslationRecords(dataset, source_lang, target_lang, identity, split, limit)


def translation_texts(pairs: "ParallelTextFiles | TranslationRecords", chunk_size: int = 10_000) -> Iterator[str]:
    """Every source and target sentence of a corpus, streamed (a tokenizer's training text)."""
    for chunk in pairs.chunks(chunk_size):
        yield from (text for text in chunk.sources + chunk.targets if text)


def open_translation_file(path: str, source_lang: str, target_lang: str, name: str, limit: int | None = None):
    """A JSON lines file of `{"translation": {lang: text, ...}}` records, or a prefix of parallel text files."""
    if path.endswith(JSON_SUFFIXES):
        if not Path(path).is_file():
            raise FileNotFoundError(f"The data file {path} does not exist.")
        records = datasets.load_dataset("json", data_files=path, split="train")
        return TranslationRecords(records, source_lang, target_lang, {"files": [file_identity(Path(path))]}, name, limit)
    return ParallelTextFiles(path, source_lang, target_lang, limit)


def token_budget_batch_sizes(sorted_lengths: np.ndarray, max_tokens: int, max_size: int | None = None) -> np.ndarray:
    """The one token-budget batcher, for training (`TokenBatchSampler`) and serving (`translate()`, the server): the
    sizes of consecutive batches of ascending lengths, each taking items while (items so far + 1) x the newest,
    longest length fits in `max_tokens` (and, with `max_size`, at most that many items); an item over the budget
    alone is a batch of one."""
    sizes, start = [], 0
    while start < len(sorted_lengths):
        # No batch starting here holds more than max_tokens // its shortest length items
        most = max_tokens // max(1, int(sorted_lengths[start]))
        window = sorted_lengths[start : start + min(most, max_size or most)]
        padded = window * np.arange(1, len(window) + 1)  # non-decreasing: the first k fit or not at all
        size = max(1, int(np.count_nonzero(padded <= max_tokens)))
        sizes.append(size)
        start += size
    return np.array(sizes, dtype=np.int64)


class TokenBatchSampler(Sampler[list[int]]):
    """Batches of sentence pairs of similar length, each holding at most `max_tokens` tokens once padded, in a
    random order (section 5.1: "Sentence pairs were batched together by approximate sequence length. Each training
    batch contained a set of sentence pairs containing approximately 25000 source tokens and 25000 target tokens").

    `lengths[i]` is the longer side of pair i, so both the padded source and the padded target of a batch stay
    within `max_tokens`. A pair longer than `max_tokens` forms a batch of its own. The batches depend only on the
    seed and the epoch (`set_epoch`), so a resumed run sees the same batches as an uninterrupted one.

    Everything per pair lives in numpy arrays (4 bytes a pair for the lengths, 4 for an epoch's order, and while an
    epoch's order is drawn about 20 more), so a corpus of millions of pairs costs megabytes.
    """

    def __init__(self, lengths: Sequence[int] | np.ndarray, max_tokens: int, shuffle: bool = True, seed: int = 0):
        if max_tokens <= 0:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}.")
        self.lengths = np.asarray(lengths, dtype=np.int32)
        self.max_tokens = max_tokens
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        # Batch sizes depend only on the sorted lengths, not on how ties are broken: computed once
        self.batch_sizes = token_budget_batch_sizes(np.sort(self.lengths), max_tokens)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        rng = random.Random(self.seed + self.epoch)
        if self.shuffle:
            # Random tie-breaks mix pairs of equal length differently each epoch
            tie_break = np.fromiter((rng.random() for _ in range(len(self.lengths))), np.float64, len(self.lengths))
            order = np.lexsort((tie_break, self.lengths)).astype(np.int32)
            del tie_break
        else:
            order = np.argsort(self.lengths, kind="stable").astype(np.int32)
        ends = np.cumsum(self.batch_sizes)
        batches = list(range(len(ends)))
        if self.shuffle:
            rng.shuffle(batches)
        # Each batch becomes a list only when it is drawn: the epoch costs one int32 per pair
        return (order[ends[b] - self.batch_sizes[b] : ends[b]].tolist() for b in batches)

    def __len__(self) -> int:
        return len(self.batch_sizes)

    @classmethod
    def for_tokenized_pairs(cls, dataset: datasets.Dataset, max_tokens: int, seed: int) -> "TokenBatchSampler":
        """For a dataset with `input_ids` (source) and `labels` (target) token lists: the lengths are read from the
        Arrow table's list offsets, without turning a single token into a Python object."""
        table = dataset.with_format("arrow")
        lengths = [pc.list_value_length(table[column]).to_numpy() for column in ("input_ids", "labels")]
        return cls(np.maximum(*lengths), max_tokens, shuffle=True, seed=seed)
