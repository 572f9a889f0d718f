"""Both training scripts on two processes (torchrun, CPU / gloo here; the same scripts run on GPUs): every rank
finishes, the loss falls, and the saved model loads through the Auto classes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoModelForSeq2SeqLM

from .translation_fixtures import SOURCE, TARGET, TINY_MODEL, write_numbers_data, write_tokenizer

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("numbers")
    prefixes = write_numbers_data(folder, {"train": 512})
    return prefixes, write_tokenizer(folder / "tokenizer", prefixes)


def torchrun(script, *arguments):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", SCRIPTS / script, *arguments]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def common_arguments(data, output_dir):
    prefixes, tokenizer = data
    return [
        "--tokenizer_name", tokenizer, "--config_overrides", TINY_MODEL, "--source_lang", SOURCE,
        "--target_lang", TARGET, "--train_file", prefixes["train"], "--max_source_length", "32",
        "--max_target_length", "32", "--output_dir", output_dir, "--max_steps", "30", "--learning_rate", "3e-3",
        "--logging_steps", "5", "--max_tokens_per_batch", "256",
    ]


def test_run_translation_on_two_processes(data, tmp_path):
    stdout = torchrun(
        "run_translation.py", *common_arguments(data, tmp_path), "--do_train", "--report_to", "none",
        "--save_strategy", "no", "--disable_tqdm", "true",
    )
    assert "run_translation finished on rank 0 of 2" in stdout and "run_translation finished on rank 1 of 2" in stdout
    losses = [e["loss"] for e in json.loads((tmp_path / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    assert len(losses) == 6 and losses[-1] < losses[0]
    assert AutoModelForSeq2SeqLM.from_pretrained(tmp_path).config.d_model == 32


def test_accelerate_loop_on_two_processes_and_resume(data, tmp_path):
    stdout = torchrun("train_accelerate.py", *common_arguments(data, tmp_path), "--checkpointing_steps", "15")
    assert "train_accelerate finished on rank 0 of 2" in stdout and "train_accelerate finished on rank 1 of 2" in stdout
    losses = [entry["loss"] for entry in json.loads((tmp_path / "loss_history.json").read_text())]
    assert len(losses) == 6 and losses[-1] < losses[0]
    assert AutoModelForSeq2SeqLM.from_pretrained(tmp_path).config.d_model == 32

    resumed = tmp_path / "resumed"
    torchrun(
        "train_accelerate.py", *common_arguments(data, resumed), "--resume_from_checkpoint", tmp_path / "step_15",
    )
    after = [entry["loss"] for entry in json.loads((resumed / "loss_history.json").read_text())]
    assert after == pytest.approx(losses[3:], abs=1e-4)  # steps 20, 25, 30 as in the uninterrupted run
