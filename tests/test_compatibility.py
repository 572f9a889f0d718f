"""Saved models keep loading: a checkpoint saved by release 0.1.0 (tests/fixtures/checkpoint-0.1.0, made with
`tests.serving_fixtures.train_reverser(folder, steps=300, d_model=32)`, 240 KB) loads in today's code and generates
the tokens recorded with it. Never regenerate it: a change to weight names or config fields must convert old
checkpoints on load, and this test proves that it does."""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

CHECKPOINT = Path(__file__).parent / "fixtures" / "checkpoint-0.1.0"


@pytest.mark.parametrize("num_beams", [1, 3])
def test_a_checkpoint_of_release_0_1_0_loads_and_generates_its_recorded_tokens(num_beams):
    recorded = json.loads((CHECKPOINT / "expected.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(CHECKPOINT)
    model = AutoModelForSeq2SeqLM.from_pretrained(CHECKPOINT).eval()
    batch = tokenizer(recorded["sources"], return_tensors="pt", padding=True)
    with torch.no_grad():
        generated = model.generate(**batch, num_beams=num_beams)
    assert generated.tolist() == recorded["greedy" if num_beams == 1 else "beam3"]


def test_loading_the_old_checkpoint_reports_no_missing_or_unexpected_weights():
    _, info = AutoModelForSeq2SeqLM.from_pretrained(CHECKPOINT, output_loading_info=True)
    assert not any(info.values()), info
