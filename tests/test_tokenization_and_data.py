"""The tokenizer, the data loading and its checks, token batching, the learning-rate schedule and the metric."""

import gzip
import json
import math
import random

import pytest
import sacrebleu
import torch
from transformers import get_scheduler
from vanilla_transformer import VanillaTransformerConfig
from vanilla_transformer.data.tokenization import check_tokenizer_matches_config
from vanilla_transformer.data.translation_data import (
    TokenBatchSampler,
    check_translation_dataset,
    load_parallel_text,
    load_translation_file,
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


def test_parallel_text_loads_plain_and_gzip_and_refuses_bad_files(tmp_path):
    (tmp_path / "train.de").write_text("\n".join(GERMAN) + "\n", encoding="utf-8")
    with gzip.open(tmp_path / "train.en.gz", "wt", encoding="utf-8") as handle:
        handle.write("\n".join(ENGLISH) + "\n")
    dataset = load_parallel_text(tmp_path / "train", "de", "en")
    assert dataset["translation"] == [{"de": d, "en": e} for d, e in zip(GERMAN, ENGLISH)]

    (tmp_path / "short.de").write_text("\n".join(GERMAN) + "\n")
    (tmp_path / "short.en").write_text("\n".join(ENGLISH[:2]) + "\n")
    with pytest.raises(ValueError, match=r"short.de has 3 lines, .*short.en has 2"):
        load_parallel_text(tmp_path / "short", "de", "en")
    with pytest.raises(FileNotFoundError, match=r"No 'fr' side for .*train: neither .*train.fr nor .*train.fr.gz exists"):
        load_parallel_text(tmp_path / "train", "de", "fr")

    (tmp_path / "gap.de").write_text("Hallo\n\nTschüss\n")
    (tmp_path / "gap.en").write_text("Hello\nWell\nBye\n")
    with pytest.raises(ValueError, match=r"Empty de sentence in the train data, record 1 \(line 2"):
        check_translation_dataset(load_parallel_text(tmp_path / "gap", "de", "en"), "de", "en", "train")


def test_json_lines_with_an_unknown_language_key_is_refused(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps({"translation": {"de": d, "en": e}}) + "\n" for d, e in zip(GERMAN, ENGLISH)))
    dataset = load_translation_file(str(path), "de", "en")
    check_translation_dataset(dataset, "de", "en", "validation")
    with pytest.raises(ValueError, match=r"Unknown language key 'fr' in the validation data: its records have \['de', 'en'\]"):
        check_translation_dataset(dataset, "fr", "en", "validation")


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
