"""The speed benchmark compares like with like and writes the ratios its README command promises. Nothing here is
timed: speed is measured by `scripts/benchmark.py` itself, not by tests."""

import json
import math
import subprocess
import sys
from pathlib import Path

import torch
from vanilla_transformer.analysis.benchmarking import Batch, build, training_flops, translation_batch

from .translation_fixtures import SOURCE, TARGET, write_numbers_data

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def trainable_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_ours_and_marian_are_built_with_the_same_dimensions():
    ours, marian = build("ours-sdpa", "tiny", "cpu", torch.float32), build("marian-sdpa", "tiny", "cpu", torch.float32)
    assert trainable_parameters(ours) == trainable_parameters(marian) == 7_577_600
    assert ours.lm_head.weight is ours.model.decoder.embeddings.embed_tokens.weight  # tied, as Marian's
    assert marian.lm_head.weight is marian.model.decoder.embed_tokens.weight


def test_model_flops_count_real_tokens_only():
    # MFU counts useful work: more padding leaves a batch's FLOPs unchanged, so a model that computes padding anyway
    # shows a lower MFU
    batch = translation_batch(8, 8000, seed=0, device="cpu")
    pad = torch.nn.functional.pad
    wider = Batch(
        pad(batch.input_ids, (0, 7)), pad(batch.attention_mask, (0, 7)), pad(batch.decoder_input_ids, (0, 5)),
        pad(batch.labels, (0, 5), value=-100),
    )
    assert training_flops("tiny", wider) == training_flops("tiny", batch)
    one_more_token = Batch(batch.input_ids, batch.attention_mask.clone(), batch.decoder_input_ids, batch.labels)
    one_more_token.attention_mask[0, -1] = 1 - one_more_token.attention_mask[0, -1]
    assert training_flops("tiny", one_more_token) != training_flops("tiny", batch)


def test_the_readme_command_writes_every_ratio(tmp_path):
    out = tmp_path / "tiny.json"
    command = [sys.executable, SCRIPTS / "benchmark.py", "model", "--size", "tiny", "--threads", "2", "--json", out,
               "--repeats", "1", "--warmup", "0", "--models", "ours-sdpa", "marian-sdpa"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(out.read_text())
    assert set(summary["ratios"]) == {"train", "greedy", "beam4", "train_peak_memory"}
    assert all(math.isfinite(value) and value > 0 for value in summary["ratios"].values())
    for entry in summary["models"].values():
        assert 0 < entry["train_mfu"] < 1 and entry["train_peak_memory_bytes"] > 0
    assert "ours-sdpa / marian-sdpa: train" in result.stdout


def test_the_recipe_benchmark_times_both_loss_paths_on_the_same_start(tmp_path):
    prefixes = write_numbers_data(tmp_path, {"train": 200})
    out = tmp_path / "recipe.json"
    command = [sys.executable, SCRIPTS / "benchmark.py", "recipe", "--corpus", prefixes["train"], "--langs", SOURCE,
               TARGET, "--steps", "5", "--rounds", "1", "--json", out]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(out.read_text())
    assert set(summary["runs"]) == {"trainer-label-smoother", "model-loss"}
    assert math.isfinite(summary["ratio"]) and summary["ratio"] > 0
    losses = [runs[0]["train_loss"] for runs in summary["runs"].values()]
    # The same start, batches and loss; only the dropout draws differ between the two paths
    assert math.isclose(*losses, rel_tol=0.02)
    assert "model-loss / trainer-label-smoother" in result.stdout


def test_the_gpu_check_says_there_is_no_gpu_and_runs_nothing_on_a_cpu_machine(tmp_path):
    if torch.cuda.is_available():
        return  # a GPU machine runs the check itself (scripts/gpu_check.sh)
    done = subprocess.run(["bash", SCRIPTS / "gpu_check.sh", tmp_path / "gpu.json"], capture_output=True, text=True)
    assert done.returncode == 0 and "no CUDA GPU here" in done.stdout
    assert not (tmp_path / "gpu.json").exists()


def test_the_data_benchmark_measures_a_converted_translators_slow_tokenizer_on_every_core(tmp_path):
    from . import pretrained_fixtures

    marian = pretrained_fixtures.checkpoint(tmp_path / "opus-mt", "opus-mt base")
    prefixes = write_numbers_data(tmp_path, {"train": 300})
    out = tmp_path / "tokenizers.json"
    command = [sys.executable, SCRIPTS / "benchmark.py", "data", "--corpus", prefixes["train"], "--langs", SOURCE, TARGET,
               "--pairs", "300", "--tokenizers", marian, "--json", out]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    (row,) = json.loads(out.read_text())["tokenizers"]
    assert row["class"] == "MarianTokenizer" and not row["fast"] and row["pairs"] == 300
    assert all(value > 0 for key, value in row.items() if key.startswith("pairs_per_second_"))
    assert "MarianTokenizer (slow)" in result.stdout
