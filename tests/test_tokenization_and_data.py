"""The tokenizer, the data loading and its checks, token batching, the learning-rate schedule and the metric."""

import gzip
import json
import math
import random

import numpy as np
import pytest
import sacrebleu
import torch
from transformers import get_scheduler
from vanilla_transformer import VanillaTransformerConfig
from vanilla_transformer.data.tokenization import check_tokenizer_matches_config
from vanilla_transformer.data.translation_data import (
    ParallelTextFiles,
    TokenBatchSampler,
    open_translation_file,
    token_budget_batch_sizes,
)
from vanilla_transformer.training import noam_peak_learning_rate
from vanilla_transformer.training.evaluation import load_translation_metric

from .conftest import ENGLISH, GERMAN


def test_tokenizer_round_trips_text_and_ends_targets_with_eos(tokenizer):
    for text in GERMAN + ENGLISH + ["Ça coûte 10€ — ½ Preis?", "  leading and  double spaces"]:
        ids = tokenizer(text).input_ids
        assert ids[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
    batch = tokenizer(GERMAN[:2], text_target=ENGLISH[:2])
    assert [labels[-1] for labels in batch["labels"]] == [tokenizer.eos_token_id] * 2
    assert tokenizer.unk_token_id not in sum(batch["input_ids"], [])  # byte-level: nothing is unknown


def test_tokenizer_specials_are_the_config_defaults(tokenizer):
    config = VanillaTransformerConfig(vocab_size=len(tokenizer))
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2, 3)
    check_tokenizer_matches_config(tokenizer, config)  # no error
    with pytest.raises(ValueError, match=r"pad_token_id: tokenizer 0, config 5"):
        check_tokenizer_matches_config(tokenizer, VanillaTransformerConfig(vocab_size=len(tokenizer), pad_token_id=5))
    with pytest.raises(ValueError, match=rf"vocabulary: tokenizer has {len(tokenizer)} tokens, model has 100"):
        check_tokenizer_matches_config(tokenizer, VanillaTransformerConfig(vocab_size=100))


def read_pairs(pairs, chunk_size=2):
    chunks = list(pairs.chunks(chunk_size))
    assert [chunk.first_line for chunk in chunks] == list(range(1, 1 + chunk_size * len(chunks), chunk_size))
    return [(s, t) for chunk in chunks for s, t in zip(chunk.sources, chunk.targets)]


def test_parallel_text_reads_plain_and_gzip_in_chunks_and_refuses_bad_files(tmp_path):
    (tmp_path / "train.de").write_text("\n".join(GERMAN) + "\n", encoding="utf-8")
    with gzip.open(tmp_path / "train.en.gz", "wt", encoding="utf-8") as handle:
        handle.write("\r\n".join(ENGLISH) + "\r\n")  # Windows line endings are removed whole
    assert read_pairs(ParallelTextFiles(tmp_path / "train", "de", "en")) == list(zip(GERMAN, ENGLISH))
    assert read_pairs(ParallelTextFiles(tmp_path / "train", "de", "en", limit=2)) == list(zip(GERMAN, ENGLISH))[:2]

    # A file that ends early is found wherever it ends, and both files' true line counts are named
    for short in (1, 2):
        (tmp_path / "short.de").write_text("\n".join(GERMAN) + "\n")
        (tmp_path / "short.en").write_text("\n".join(ENGLISH[:short]) + "\n")
        with pytest.raises(ValueError, match=rf"short.de has 3 lines, .*short.en has {short}\. Line N of one"):
            read_pairs(ParallelTextFiles(tmp_path / "short", "de", "en"))
    with pytest.raises(FileNotFoundError, match=r"No 'fr' side for .*train: neither .*train.fr nor .*train.fr.gz exists"):
        ParallelTextFiles(tmp_path / "train", "de", "fr")

    # Only "\n" ends a line: a stray carriage return or line separator inside a sentence keeps the files aligned
    (tmp_path / "crawl.de").write_text("Ein\rSatz\nZwei\u2028Zeilen\n")
    (tmp_path / "crawl.en").write_text("One sentence\nTwo lines\n")
    assert read_pairs(ParallelTextFiles(tmp_path / "crawl", "de", "en")) == [("Ein\rSatz", "One sentence"), ("Zwei\u2028Zeilen", "Two lines")]


def test_json_lines_with_an_unknown_language_key_is_refused(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps({"translation": {"de": d, "en": e}}) + "\n" for d, e in zip(GERMAN, ENGLISH)))
    assert read_pairs(open_translation_file(str(path), "de", "en", "validation"), chunk_size=1) == list(zip(GERMAN, ENGLISH))
    with pytest.raises(ValueError, match=r"Unknown language key 'fr' in the validation data: its records have \['de', 'en'\]"):
        open_translation_file(str(path), "fr", "en", "validation")
    with pytest.raises(FileNotFoundError, match=r"The data file .*missing.jsonl does not exist"):
        open_translation_file(str(tmp_path / "missing.jsonl"), "de", "en", "validation")


def test_token_batches_cover_every_pair_once_within_the_budget():
    rng = random.Random(0)
    lengths = [rng.randint(1, 60) for _ in range(500)] + [300]  # one pair longer than the budget
    sampler = TokenBatchSampler(lengths, max_tokens=256, seed=3)
    epochs = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
        for batch in batches:
            padded = max(lengths[i] for i in batch) * len(batch)
            assert padded <= 256 or len(batch) == 1
        # similar lengths together: a batch's lengths span much less than the data's
        assert sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches) < 5
        epochs.append(batches)
    assert epochs[0] != epochs[1]
    sampler.set_epoch(1)
    assert list(sampler) == epochs[1]  # a resumed run sees the same batches


@pytest.mark.parametrize("max_size", [None, 1, 7])
def test_the_token_budget_batcher_cuts_sorted_lengths_greedily_within_budget_and_size(max_size):
    # The one batcher of training and serving: every item once, in order; no batch over the budget (but a lone
    # over-long item) or over max_size; no batch that could have taken the next item
    lengths = np.sort(np.array([random.Random(1).randint(1, 80) for _ in range(400)] + [500]))
    sizes = token_budget_batch_sizes(lengths, 256, max_size)
    assert sizes.sum() == len(lengths) and (sizes > 0).all()
    ends = np.cumsum(sizes)
    for size, end in zip(sizes, ends):
        assert size * lengths[end - 1] <= 256 or size == 1
        assert max_size is None or size <= max_size
        if end < len(lengths) and (max_size is None or size < max_size):
            assert (size + 1) * lengths[end] > 256


def test_noam_schedule_is_the_papers_formula():
    d_model, warmup = 512, 4000
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([parameter], lr=noam_peak_learning_rate(d_model, warmup))
    scheduler = get_scheduler("inverse_sqrt", optimizer, num_warmup_steps=warmup)
    for step in range(1, 20001):
        optimizer.step()
        scheduler.step()
        if step in (1, 100, 3999, 4000, 4001, 10000, 20000):
            paper = d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)
            assert math.isclose(optimizer.param_groups[0]["lr"], paper, rel_tol=1e-9), step


def test_noam_needs_a_warmup():
    with pytest.raises(ValueError, match="--noam_learning_rate needs --warmup_steps"):
        noam_peak_learning_rate(512, 0)


def test_packaged_metric_equals_sacrebleu():
    hypotheses = ["Two young men play outside.", "A girl in pink climbs the road.", "Dogs run in the snow."]
    scores = load_translation_metric().compute(predictions=hypotheses, references=[[e] for e in ENGLISH])
    assert scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hypotheses, [ENGLISH]).score)
    assert scores["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hypotheses, [ENGLISH]).score)
    assert 0 < scores["bleu"] < 100
