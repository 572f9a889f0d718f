"""Attention maps and the pictures drawn from them, on a tiny model."""

import json
import subprocess
import sys
from pathlib import Path

import torch
from PIL import Image
from vanilla_transformer.analysis.attention_maps import attention_maps
from vanilla_transformer.analysis.plotting import head_grid

from .conftest import tiny_model

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def test_attention_maps_are_distributions_and_the_future_is_masked(tokenizer):
    model = tiny_model("sdpa", vocab_size=len(tokenizer))
    maps = attention_maps(model, tokenizer, "Ein Hund läuft.", "A dog runs.")
    source, target = len(maps.source_tokens), len(maps.target_tokens)
    assert maps.encoder.shape == (2, 4, source, source)
    assert maps.decoder.shape == (2, 4, target, target)
    assert maps.cross.shape == (2, 4, target, source)
    for weights in (maps.encoder, maps.decoder, maps.cross):
        assert torch.allclose(weights.sum(-1), torch.ones(()), atol=1e-5)
    assert torch.all(maps.decoder.triu(diagonal=1) == 0)
    assert maps.target_tokens[-1] == "</s>" and model.config._attn_implementation == "sdpa"  # restored

    generated = attention_maps(model, tokenizer, "Ein Hund läuft.", max_new_tokens=5)
    assert 1 <= len(generated.target_tokens) <= 5


def test_plot_scripts_write_the_pictures(tokenizer, tmp_path):
    model = tiny_model("sdpa", vocab_size=len(tokenizer))
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    subprocess.run(
        [sys.executable, SCRIPTS / "plot_attention.py", "--model", tmp_path / "model", "--source", "Ein Hund läuft.",
         "--target", "A dog runs.", "--output_dir", tmp_path / "pictures"],
        check=True, capture_output=True,
    )
    names = sorted(p.name for p in (tmp_path / "pictures").iterdir())
    expected = [f"{kind}_layer{layer}.png" for kind in ("cross", "decoder", "encoder") for layer in (1, 2)]
    assert names == sorted(expected + ["cross_attention_average.png"])
    assert head_grid(4) == (2, 2) and head_grid(8) == (2, 4)
    for name in names:
        image = Image.open(tmp_path / "pictures" / name)
        assert image.width > 100 and image.height > 100
        assert len(set(image.convert("L").getdata())) > 10  # drawn, not blank
    grid = Image.open(tmp_path / "pictures" / "cross_layer1.png")
    assert 0.8 < grid.width / grid.height < 1.25  # 4 heads: a 2 x 2 grid

    (tmp_path / "run").mkdir()
    log = [{"step": s, "loss": 5.0 / s, "learning_rate": 1e-3 * s / 10} for s in range(1, 11)]
    log += [{"step": 5, "eval_loss": 1.2, "eval_bleu": 10.0}, {"step": 10, "eval_loss": 0.9, "eval_bleu": 20.0}]
    (tmp_path / "run" / "trainer_state.json").write_text(json.dumps({"log_history": log}))
    subprocess.run(
        [sys.executable, SCRIPTS / "plot_training.py", "--run", tmp_path / "run", "--output", tmp_path / "curves.png"],
        check=True, capture_output=True,
    )
    curves = Image.open(tmp_path / "curves.png")
    assert curves.width > 2.5 * curves.height  # three panels side by side: loss, learning rate, BLEU
