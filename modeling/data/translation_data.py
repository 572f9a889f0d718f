"""Parallel data for translation: loading (JSON lines, parallel plain or .gz text files, Hub datasets), checks that
fail before any training starts, and the paper's batching by tokens (section 5.1)."""

import gzip
import random
from collections.abc import Sequence
from pathlib import Path

import datasets
from torch.utils.data import Sampler

JSON_SUFFIXES = (".json", ".jsonl")


def read_lines(path: str | Path) -> list[str]:
    """The lines of a UTF-8 text file, plain or gzip-compressed, without their line endings."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="") as handle:
        return [line.rstrip("\r\n") for line in handle]


def parallel_file(prefix: str | Path, lang: str) -> Path:
    """`{prefix}.{lang}` or `{prefix}.{lang}.gz`, whichever exists."""
    for candidate in (Path(f"{prefix}.{lang}"), Path(f"{prefix}.{lang}.gz")):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"No {lang!r} side for {prefix}: neither {prefix}.{lang} nor {prefix}.{lang}.gz exists. Parallel text is given "
        "as a prefix whose files end in .<lang> or .<lang>.gz (one sentence per line), or as a .json/.jsonl file."
    )


def load_parallel_text(prefix: str | Path, source_lang: str, target_lang: str) -> datasets.Dataset:
    """Reads `{prefix}.{source_lang}` and `{prefix}.{target_lang}` (each possibly .gz), line N translating line N."""
    source_path, target_path = parallel_file(prefix, source_lang), parallel_file(prefix, target_lang)
    sources, targets = read_lines(source_path), read_lines(target_path)
    if len(sources) != len(targets):
        raise ValueError(
            f"Parallel files differ in length: {source_path} has {len(sources)} lines, {target_path} has "
            f"{len(targets)}. Line N of one must translate line N of the other."
        )
    pairs = [{source_lang: s, target_lang: t} for s, t in zip(sources, targets)]
    return datasets.Dataset.from_dict({"translation": pairs})


def load_translation_file(path: str, source_lang: str, target_lang: str) -> datasets.Dataset:
    """A JSON lines file of `{"translation": {lang: text, ...}}` records, or a prefix of parallel text files."""
    if path.endswith(JSON_SUFFIXES):
        if not Path(path).is_file():
            raise FileNotFoundError(f"The data file {path} does not exist.")
        return datasets.load_dataset("json", data_files=path, split="train")
    return load_parallel_text(path, source_lang, target_lang)


def check_translation_dataset(dataset: datasets.Dataset, source_lang: str, target_lang: str, name: str) -> None:
    """Fails on a split with no pairs, without a `translation` column, lacking one of the two languages, or holding
    an empty sentence (which would train the model to translate something into nothing)."""
    if len(dataset) == 0:
        raise ValueError(f"The {name} data holds no sentence pairs.")
    if "translation" not in dataset.column_names:
        raise ValueError(
            f"The {name} data has columns {dataset.column_names}; translation data needs a `translation` column of "
            '{"<source_lang>": text, "<target_lang>": text} records.'
        )
    for row, pair in enumerate(dataset["translation"]):
        for lang in (source_lang, target_lang):
            if lang not in pair or pair[lang] is None:
                available = sorted(key for key, value in pair.items() if value is not None)
                raise ValueError(
                    f"Unknown language key {lang!r} in the {name} data: its records have {available} (record {row}). "
                    "Set --source_lang / --target_lang to keys the data has."
                )
            if not pair[lang].strip():
                raise ValueError(
                    f"Empty {lang} sentence in the {name} data, record {row} (line {row + 1} of a text file). Remove "
                    "the pair or fill it in."
                )


class TokenBatchSampler(Sampler[list[int]]):
    """Batches of sentence pairs of similar length, each holding at most `max_tokens` tokens once padded, in a
    random order (section 5.1: "Sentence pairs were batched together by approximate sequence length. Each training
    batch contained a set of sentence pairs containing approximately 25000 source tokens and 25000 target tokens").

    `lengths[i]` is the longer side of pair i, so both the padded source and the padded target of a batch stay
    within `max_tokens`. A pair longer than `max_tokens` forms a batch of its own. The batches depend only on the
    seed and the epoch (`set_epoch`), so a resumed run sees the same batches as an uninterrupted one.
    """

    def __init__(self, lengths: Sequence[int], max_tokens: int, shuffle: bool = True, seed: int = 0):
        if max_tokens <= 0:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}.")
        self.lengths = list(lengths)
        self.max_tokens = max_tokens
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        # Grouping sorted lengths greedily fixes how many batches there are; only their members and order vary
        self.num_batches = len(self._group(sorted(range(len(self.lengths)), key=self.lengths.__getitem__)))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _group(self, order: list[int]) -> list[list[int]]:
        batches, batch, longest = [], [], 0
        for index in order:
            longest_with = max(longest, self.lengths[index])
            if batch and longest_with * (len(batch) + 1) > self.max_tokens:
                batches.append(batch)
                batch, longest_with = [], self.lengths[index]
            batch.append(index)
            longest = longest_with
        if batch:
            batches.append(batch)
        return batches

    def __iter__(self):
        rng = random.Random(self.seed + self.epoch)
        # Random tie-breaks mix pairs of equal length differently each epoch
        tie_break = [rng.random() for _ in self.lengths] if self.shuffle else list(range(len(self.lengths)))
        order = sorted(range(len(self.lengths)), key=lambda i: (self.lengths[i], tie_break[i]))
        batches = self._group(order)
        if self.shuffle:
            rng.shuffle(batches)
        return iter(batches)

    def __len__(self) -> int:
        return self.num_batches

    @classmethod
    def for_tokenized_pairs(cls, dataset: datasets.Dataset, max_tokens: int, seed: int) -> "TokenBatchSampler":
        """For a dataset with `input_ids` (source) and `labels` (target) token lists."""
        lengths = [max(len(s), len(t)) for s, t in zip(dataset["input_ids"], dataset["labels"])]
        return cls(lengths, max_tokens, shuffle=True, seed=seed)
