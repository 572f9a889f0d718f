"""Saved models keep loading: a checkpoint in the format of release 0.1.0 loads in today's code and generates the
tokens recorded with it.

`tests/fixtures/checkpoint-0.1.0` holds what release 0.1.0 wrote (config.json, generation config, tokenizer) and, in
place of the weights file, its manifest: `weights.json`, every weight's name and shape as 0.1.0 saved them (from a
model made with `tests.serving_fixtures.train_reverser(folder, steps=300, d_model=32)`). The weights themselves are
drawn from a fixed seed into a safetensors file with exactly those names, so that no weights are committed. The
tokens in `expected.json` were recorded from those seeded weights by the code of 0.2.0, right after that code had
loaded 0.1.0's own weights file with no missing or unexpected weight and generated the tokens 0.1.0 recorded with it. Never regenerate the fixture: a change to weight names or
config fields must convert old checkpoints on load, and this test proves that it does."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

FIXTURE = Path(__file__).parent / "fixtures" / "checkpoint-0.1.0"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """The 0.1.0 checkpoint: its files, and weights of its names and shapes drawn from seed 0 in their order."""
    folder = tmp_path_factory.mktemp("checkpoint-0.1.0")
    for file in FIXTURE.iterdir():
        if file.name not in ("weights.json", "expected.json"):
            shutil.copy(file, folder)
    generator = torch.Generator().manual_seed(0)
    weights = {}
    for name, shape in json.loads((FIXTURE / "weights.json").read_text()).items():
        noise = torch.randn(shape, generator=generator)
        # LayerNorm gains near 1, as a trained model's are; everything else of the scale of trained weights
        weights[name] = 1 + 0.1 * noise if "layer_norm.weight" in name else 0.3 * noise
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


@pytest.mark.parametrize("num_beams", [1, 3])
def test_a_checkpoint_of_release_0_1_0_loads_and_generates_its_recorded_tokens(checkpoint, num_beams):
    recorded = json.loads((FIXTURE / "expected.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForSeq2SeqLM.from_pretrained(checkpoint).eval()
    batch = tokenizer(recorded["sources"], return_tensors="pt", padding=True)
    with torch.no_grad():
        generated = model.generate(**batch, num_beams=num_beams)
    assert generated.tolist() == recorded["greedy" if num_beams == 1 else "beam3"]


def test_loading_the_old_checkpoint_reports_no_missing_or_unexpected_weights(checkpoint):
    _, info = AutoModelForSeq2SeqLM.from_pretrained(checkpoint, output_loading_info=True)
    assert not any(info.values()), info
