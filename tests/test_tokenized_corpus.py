"""Tokenizing a corpus once: the same ids as the tokenizer itself gives, the same batches as the pure-Python batching
the quick start was tuned with (on Multi30k itself when it is here), a cache that is reused, rebuilt when its data
changes and never left half written, and the filter for crawled corpora with its refusals."""

import os
import random
import re
from pathlib import Path

import datasets
import pytest
from transformers import AutoTokenizer, DataCollatorForSeq2Seq
from vanilla_transformer.data import tokenized_corpus
from vanilla_transformer.data.tokenization import train_bpe_tokenizer
from vanilla_transformer.data.tokenized_corpus import PairFilter, tokenize_once
from vanilla_transformer.data.translation_data import ParallelTextFiles, TokenBatchSampler, read_lines

from .conftest import ENGLISH, GERMAN

MULTI30K = Path(os.environ.get("MULTI30K_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "multi30k"))


def reference_batches(lengths, max_tokens, seed, epoch, shuffle=True):
    """The token batching of 0.2.0 in plain Python (Python lists and tuples of every pair): the batches that the
    quick start's recipe was tuned with, which the numpy sampler must reproduce exactly."""
    rng = random.Random(seed + epoch)
    tie_break = [rng.random() for _ in lengths] if shuffle else list(range(len(lengths)))
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], tie_break[i]))
    batches, batch, longest = [], [], 0
    for index in order:
        longest_with = max(longest, lengths[index])
        if batch and longest_with * (len(batch) + 1) > max_tokens:
            batches.append(batch)
            batch, longest_with = [], lengths[index]
        batch.append(index)
        longest = longest_with
    if batch:
        batches.append(batch)
    if shuffle:
        rng.shuffle(batches)
    return batches


def wrapper_ids(tokenizer, sources, targets, max_source_length, max_target_length):
    """What 0.2.0 stored: the tokenizer called as the transformers example script calls it."""
    encoded = tokenizer(sources, text_target=targets, max_length=max_source_length, max_target_length=max_target_length, truncation=True)
    return encoded["input_ids"], encoded["labels"]


def write_corpus(prefix: Path, sources, targets):
    Path(f"{prefix}.de").write_text("".join(s + "\n" for s in sources), encoding="utf-8")
    Path(f"{prefix}.en").write_text("".join(t + "\n" for t in targets), encoding="utf-8")
    return prefix


def corpus_pairs(count, seed=0):
    """Pairs of the conftest sentences glued together at random, some far beyond the max lengths below."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        picks = [rng.randrange(len(GERMAN)) for _ in range(rng.choice([1, 1, 2, 6]))]
        pairs.append((" ".join(GERMAN[i] for i in picks), " ".join(ENGLISH[i] for i in picks)))
    return [s for s, _ in pairs], [t for _, t in pairs]


def test_numpy_batching_reproduces_the_python_batching_exactly():
    rng = random.Random(0)
    lengths = [rng.randint(1, 120) for _ in range(3000)] + [700, 2000]  # two pairs over the largest budget
    for max_tokens in (7, 256, 1024):
        for shuffle in (True, False):
            sampler = TokenBatchSampler(lengths, max_tokens, shuffle=shuffle, seed=5)
            for epoch in (0, 3):
                sampler.set_epoch(epoch)
                expected = reference_batches(lengths, max_tokens, seed=5, epoch=epoch, shuffle=shuffle)
                assert list(sampler) == expected, (max_tokens, shuffle, epoch)
                assert len(sampler) == len(expected)


def test_tokenized_once_equals_the_tokenizer_in_one_process_or_several(tokenizer, tmp_path):
    sources, targets = corpus_pairs(60)
    prefix = write_corpus(tmp_path / "train", sources, targets)
    expected = wrapper_ids(tokenizer, sources, targets, 16, 12)
    assert max(len(ids) for ids in expected[0]) == 16  # truncation is exercised
    for workers in (1, 2):
        corpus = tokenize_once(ParallelTextFiles(prefix, "de", "en"), tokenizer, "train", 16, 12,
                               cache_root=tmp_path / f"cache-{workers}", num_workers=workers, chunk_pairs=7)
        assert corpus.built and (corpus.dataset["input_ids"], corpus.dataset["labels"]) == expected
        assert corpus.summary["kept"] == corpus.summary["read"] == 60


def test_the_cache_is_reused_rebuilt_when_its_inputs_change_and_never_left_half_written(tokenizer, tmp_path, monkeypatch, caplog):
    sources, targets = corpus_pairs(30)
    prefix = write_corpus(tmp_path / "train", sources, targets)

    def tokenized(max_source_length=16, **options):
        pairs = ParallelTextFiles(prefix, "de", "en")
        return tokenize_once(pairs, tokenizer, "train", max_source_length, 12, cache_root=tmp_path / "cache", chunk_pairs=8, **options)

    # A build killed half way (here: the third chunk fails) leaves nothing that a later run could take for whole
    calls = []

    def failing(self, sources, targets, original=tokenized_corpus.PairEncoder.__call__):
        calls.append(len(sources))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, sources, targets)

    monkeypatch.setattr(tokenized_corpus.PairEncoder, "__call__", failing)
    with pytest.raises(KeyboardInterrupt):
        tokenized(num_workers=1)
    assert [path.name for path in (tmp_path / "cache").iterdir() if not path.name.endswith(".lock")] == []
    monkeypatch.undo()

    with caplog.at_level("INFO", logger="vanilla_transformer"):
        first = tokenized()
        again = tokenized()
    assert first.built and not again.built and again.folder == first.folder
    assert again.dataset["input_ids"] == first.dataset["input_ids"]
    assert "Tokenized the train data: 30 pairs in" in caplog.text and f"cached in {first.folder}" in caplog.text
    assert f"Reusing the tokenized train data (30 pairs) cached in {first.folder}" in caplog.text

    assert tokenized(max_source_length=8).folder != first.folder  # what decides the ids decides the folder
    assert tokenized(overwrite=True).built
    write_corpus(prefix, sources[::-1], targets[::-1])  # the same sizes, other contents: a new modification time
    os.utime(f"{prefix}.de", ns=(0, os.stat(f"{prefix}.de").st_mtime_ns + 10**9))
    changed = tokenized()
    assert changed.built and changed.dataset["labels"] == wrapper_ids(tokenizer, sources[::-1], targets[::-1], 16, 12)[1]


def truncate_to_half(folder: Path):
    table = folder / "data.arrow"
    os.truncate(table, table.stat().st_size // 2)


@pytest.mark.parametrize(
    "damage, reason",
    [
        (truncate_to_half, r"data.arrow has [\d,]+ bytes, [\d,]+ when it was built"),
        (lambda folder: os.truncate(folder / "data.arrow", 0), r"data.arrow has 0 bytes"),
        (lambda folder: (folder / "summary.json").unlink(), r"summary.json is missing"),
        (lambda folder: (folder / "key.json").unlink(), r"key.json is missing"),
    ],
    ids=["truncated", "emptied", "summary deleted", "key deleted"],
)
def test_a_cache_damaged_from_outside_is_found_when_opened_logged_and_rebuilt(tokenizer, tmp_path, caplog, damage, reason):
    sources, targets = corpus_pairs(400)
    pairs = ParallelTextFiles(write_corpus(tmp_path / "train", sources, targets), "de", "en")
    first = tokenize_once(pairs, tokenizer, "train", 16, 12, cache_root=tmp_path / "cache", num_workers=1)
    expected = list(first.dataset["input_ids"])  # read now: the damage below cuts the file this dataset maps
    damage(first.folder)
    with caplog.at_level("WARNING", logger="vanilla_transformer"):
        again = tokenize_once(pairs, tokenizer, "train", 16, 12, cache_root=tmp_path / "cache", num_workers=1)
    assert re.search(rf"The tokenized train data cached in {re.escape(str(first.folder))} is damaged \({reason}", caplog.text)
    assert again.built and again.folder == first.folder and again.dataset["input_ids"] == expected
    reused = tokenize_once(pairs, tokenizer, "train", 16, 12, cache_root=tmp_path / "cache", num_workers=1)
    assert not reused.built and reused.dataset["input_ids"] == expected


def test_a_table_that_does_not_read_is_damaged_whatever_its_size(tokenizer, tmp_path):
    # The size as recorded, the bytes not: the read error itself finds it
    sources, targets = corpus_pairs(50)
    pairs = ParallelTextFiles(write_corpus(tmp_path / "train", sources, targets), "de", "en")
    folder = tokenize_once(pairs, tokenizer, "train", 16, 12, cache_root=tmp_path / "cache", num_workers=1).folder
    table = folder / "data.arrow"
    table.write_bytes(b"\0" * table.stat().st_size)
    with pytest.raises(tokenized_corpus.DamagedCache, match="data.arrow does not read"):
        tokenized_corpus.open_cache(folder)


def test_crawled_corpora_are_refused_or_filtered_with_the_dropped_lines_reported(tokenizer, tmp_path):
    pairs = [
        (GERMAN[0], ENGLISH[0]),
        ("", ENGLISH[1]),  # line 2: an empty source
        (GERMAN[2], ENGLISH[2]),
        (GERMAN[1], "   "),  # line 4: a blank target
        (" ".join(GERMAN * 3), " ".join(ENGLISH * 3)),  # line 5: longer than the max lengths
        ("Ja.", ENGLISH[0]),  # line 6: 2 tokens against many
        (GERMAN[1], ENGLISH[1]),
    ]
    prefix = write_corpus(tmp_path / "crawl", [s for s, _ in pairs], [t for _, t in pairs])
    with pytest.raises(ValueError, match=r"Empty de sentence in the train data, record 1 \(line 2 of a text file\)\. "
                                         r"Remove the pair or fill it in, or pass --filter_pairs to drop every such pair"):
        tokenize_once(ParallelTextFiles(prefix, "de", "en"), tokenizer, "train", 60, 60, cache_root=tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("train-*/"))

    corpus = tokenize_once(ParallelTextFiles(prefix, "de", "en"), tokenizer, "train", 60, 60, pair_filter=PairFilter(3.0),
                           cache_root=tmp_path / "cache", chunk_pairs=3)
    assert corpus.summary["dropped"] == {"empty side": 2, "too long": 1, "length ratio": 1}
    kept = [pairs[i] for i in (0, 2, 6)]
    assert corpus.dataset["input_ids"] == wrapper_ids(tokenizer, [s for s, _ in kept], [t for _, t in kept], 60, 60)[0]
    report = corpus.write_dropped_report(tmp_path / "run")
    assert report.read_text().splitlines() == ["line\treason", "2\tempty side", "4\tempty side", "5\ttoo long", "6\tlength ratio"]

    everything = PairFilter(max_length_ratio=100.0)
    assert tokenize_once(ParallelTextFiles(prefix, "de", "en"), tokenizer, "train", 400, 400, pair_filter=everything,
                         cache_root=tmp_path / "cache").summary["kept"] == 5
    with pytest.raises(ValueError, match=r"length ratio of a filter is at least 1"):
        PairFilter(0.5)
    (tmp_path / "empty.de").write_text("\n")
    (tmp_path / "empty.en").write_text("Hello\n")
    with pytest.raises(ValueError, match=r"The train data holds no sentence pairs that survive the filter \(read 1"):
        tokenize_once(ParallelTextFiles(tmp_path / "empty", "de", "en"), tokenizer, "train", 60, 60,
                      pair_filter=PairFilter(), cache_root=tmp_path / "cache")


@pytest.mark.skipif(not (MULTI30K / "train.de.gz").is_file(), reason=f"Multi30k is not at {MULTI30K} (set MULTI30K_DIR)")
def test_multi30k_gives_the_same_tokens_and_batches_as_before(tmp_path):
    sources, targets = read_lines(MULTI30K / "train.de.gz"), read_lines(MULTI30K / "train.en.gz")
    train_bpe_tokenizer(sources[:5000] + targets[:5000], vocab_size=2000).save_pretrained(tmp_path / "tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "tokenizer")

    # 0.2.0's pipeline: every pair a Python dict, tokenized by datasets.map through the tokenizer's __call__
    def tokenize(batch):
        pairs = batch["translation"]
        return tokenizer([p["de"] for p in pairs], text_target=[p["en"] for p in pairs], max_length=64, max_target_length=64, truncation=True)

    before = datasets.Dataset.from_dict({"translation": [{"de": s, "en": t} for s, t in zip(sources, targets)]})
    before = before.map(tokenize, batched=True, remove_columns=["translation"])
    after = tokenize_once(ParallelTextFiles(MULTI30K / "train", "de", "en"), tokenizer, "train", 64, 64, cache_root=tmp_path / "cache").dataset
    assert len(after) == 29000
    assert after["input_ids"] == before["input_ids"] and after["labels"] == before["labels"]

    lengths = [max(len(s), len(t)) for s, t in zip(before["input_ids"], before["labels"])]
    sampler = TokenBatchSampler.for_tokenized_pairs(after, max_tokens=1024, seed=42)
    collator = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert batches == reference_batches(lengths, 1024, seed=42, epoch=epoch)
        for batch in batches[:3]:  # the model sees the same tensors
            old, new = collator(before.__getitems__(batch)), collator(after.__getitems__(batch))
            assert old.keys() == new.keys() and all((old[k] == new[k]).all() for k in old)
