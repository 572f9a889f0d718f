"""Both training scripts on two processes (torchrun, CPU / gloo here; the same scripts run on GPUs): every rank
finishes, the loss falls, and the saved model loads through the Auto classes; and fully sharded training (FSDP 2) of
the model on two processes, equal to one process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM

from .translation_fixtures import SOURCE, TARGET, TINY_MODEL, write_numbers_data, write_tokenizer

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("numbers")
    prefixes = write_numbers_data(folder, {"train": 512})
    return prefixes, write_tokenizer(folder / "tokenizer", prefixes)


def torchrun(script, *arguments, processes=2, environment=None):
    """Runs a script of scripts/ (or the file at an absolute path) on N processes; returns the finished run."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), SCRIPTS / script, *arguments]
    return run(command, environment)


def run(command, environment=None):
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(environment or {})}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def common_arguments(data, output_dir):
    prefixes, tokenizer = data
    return [
        "--tokenizer_name", tokenizer, "--config_overrides", TINY_MODEL, "--source_lang", SOURCE,
        "--target_lang", TARGET, "--train_file", prefixes["train"], "--max_source_length", "32",
        "--max_target_length", "32", "--output_dir", output_dir, "--max_steps", "30", "--learning_rate", "3e-3",
        "--logging_steps", "5", "--max_tokens_per_batch", "256",
    ]


def test_run_translation_on_two_processes(data, tmp_path):
    result = torchrun(
        "run_translation.py", *common_arguments(data, tmp_path / "run"), "--do_train", "--report_to", "none",
        "--save_strategy", "no", "--disable_tqdm", "true", "--tokenized_cache_dir", tmp_path / "cache",
    )
    stdout = result.stdout
    assert "run_translation finished on rank 0 of 2" in stdout and "run_translation finished on rank 1 of 2" in stdout
    # One process tokenized the corpus; the other waited for it and memory-mapped its cache
    assert result.stderr.count("Tokenized the train data: 512 pairs") == 1, result.stderr[-3000:]
    assert result.stderr.count("Reusing the tokenized train data (512 pairs)") == 1
    tmp_path = tmp_path / "run"
    losses = [e["loss"] for e in json.loads((tmp_path / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    assert len(losses) == 6 and losses[-1] < losses[0]
    assert AutoModelForSeq2SeqLM.from_pretrained(tmp_path).config.d_model == 32


def test_accelerate_loop_on_two_processes_and_resume(data, tmp_path):
    stdout = torchrun("train_accelerate.py", *common_arguments(data, tmp_path), "--checkpointing_steps", "15").stdout
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


def test_two_processes_train_as_one_process_accumulating_the_same_batches(data, tmp_path):
    # Without dropout, two processes each taking every other batch make the steps that one process makes by
    # accumulating the gradients of the same two batches: the learning-rate schedule included, bit for bit
    def arguments(output_dir):
        return [*common_arguments(data, output_dir), "--config_overrides", TINY_MODEL + ",dropout=0.0", "--max_steps", "10"]

    stdout = torchrun("train_accelerate.py", *arguments(tmp_path / "two")).stdout
    assert "train_accelerate finished on rank 1 of 2" in stdout
    torchrun("train_accelerate.py", *arguments(tmp_path / "one"), "--gradient_accumulation_steps", "2", processes=1)
    two, one = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "two"), AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "one")
    differences = {name: (p - one.state_dict()[name]).abs().max().item() for name, p in two.state_dict().items()}
    assert max(differences.values()) < 1e-6, max(differences.items(), key=lambda item: item[1])
    losses = [entry["loss"] for entry in json.loads((tmp_path / "two" / "loss_history.json").read_text())]
    assert losses[-1] < losses[0]


def test_fully_sharded_training_on_two_processes_matches_one_process(tmp_path):
    # torch's fully_shard (FSDP 2) over gloo, each layer one shard unit as in accelerate_configs/fsdp.yaml; the
    # reference accumulates both halves of every step's batch on one unsharded process (tests/fsdp_worker.py)
    worker = Path(__file__).parent / "fsdp_worker.py"
    sharded_run = torchrun(worker, tmp_path / "sharded")
    assert "view tensor" not in sharded_run.stderr  # FSDP warns when a layer returns a view: its hooks could be lost
    run([sys.executable, worker, tmp_path / "one"])

    sharded_losses, one_losses = (json.loads((tmp_path / run / "losses.json").read_text()) for run in ("sharded", "one"))
    assert sharded_losses == pytest.approx(one_losses, abs=1e-5) and sharded_losses[-1] < sharded_losses[0]
    sharded, info = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "sharded", output_loading_info=True)
    one = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "one")
    assert not any(info.values()), info
    assert sharded.lm_head.weight.data_ptr() == sharded.model.encoder.embeddings.embed_tokens.weight.data_ptr()
    for name, weight in sharded.state_dict().items():
        reference = one.state_dict()[name]
        if name.endswith("kv_proj.bias"):
            # The key bias adds the same q.b_k to every score of a query, which softmax ignores: its gradient is
            # rounding noise, which Adam scales up to full steps. Only the value half must agree
            weight, reference = weight[weight.numel() // 2 :], reference[reference.numel() // 2 :]
        assert torch.allclose(weight, reference, atol=1e-5), name
    batch = dict(input_ids=torch.tensor([[5, 9, 12, 2]]), decoder_input_ids=torch.tensor([[1, 7, 30]]))
    with torch.no_grad():
        assert torch.allclose(sharded(**batch).logits, one(**batch).logits, atol=1e-5)


def test_two_nodes_train_as_two_processes_of_one_node_on_one_shared_cache(data, tmp_path):
    # The documented multi-node command, as 2 nodes x 1 process on 127.0.0.1 (static rendezvous, gloo), both nodes
    # on one cache folder, as on a shared filesystem: the corpus is tokenized once, and the losses are the 2-process
    # single-node run's
    def arguments(output_dir):
        return [*common_arguments(data, output_dir), "--do_train", "--report_to", "none", "--save_strategy", "no",
                "--disable_tqdm", "true", "--tokenized_cache_dir", tmp_path / "cache", "--max_steps", "10"]

    def losses(output_dir):
        history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
        return [entry["loss"] for entry in history if "loss" in entry]

    port = str(29600 + os.getpid() % 300)
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1", "--node_rank",
             str(rank), "--master_addr", "127.0.0.1", "--master_port", port, SCRIPTS / "run_translation.py",
             *arguments(tmp_path / "two-nodes")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment,
        )
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=300) for node in nodes]
    assert all(node.returncode == 0 for node in nodes), [stderr[-2000:] for _, stderr in outputs]
    stdout, stderr = "".join(out for out, _ in outputs), "".join(err for _, err in outputs)
    assert "finished on rank 0 of 2" in stdout and "finished on rank 1 of 2" in stdout
    # A cold cache: one node's process tokenized the corpus, the other waited for it and reused its files
    assert stderr.count("Tokenized the train data: 512 pairs") == 1, stderr[-3000:]
    assert stderr.count("Reusing the tokenized train data (512 pairs)") == 1
    torchrun("run_translation.py", *arguments(tmp_path / "one-node"))
    assert losses(tmp_path / "two-nodes") == losses(tmp_path / "one-node") and len(losses(tmp_path / "one-node")) == 2
