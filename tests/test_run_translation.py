"""The Seq2SeqTrainer pipeline on a tiny model and the package's numbers task: train, evaluate, predict with BLEU;
resume; average checkpoints; translate from the command line; and bad input refused before any training."""

import json
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, Seq2SeqTrainingArguments, TrainerCallback
from vanilla_transformer.data.tokenization import train_bpe_tokenizer
from transformers.trainer_pt_utils import LabelSmoother
from vanilla_transformer.training import DataTrainingArguments, ModelArguments, TranslationTrainer, run_translation
from vanilla_transformer.training.accelerate_loop import LoopArguments, train_with_accelerate
from vanilla_transformer.training.checkpoint_averaging import average_checkpoints, last_checkpoints

from .translation_fixtures import SOURCE, TARGET, TINY_MODEL, write_numbers_data, write_tokenizer

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("numbers")
    prefixes = write_numbers_data(folder)
    return prefixes, write_tokenizer(folder / "tokenizer", prefixes)


def arguments(data, output_dir, **training):
    prefixes, tokenizer = data
    model_args = ModelArguments(tokenizer_name=str(tokenizer), config_overrides=TINY_MODEL)
    data_args = DataTrainingArguments(
        source_lang=SOURCE,
        target_lang=TARGET,
        train_file=str(prefixes["train"]),
        validation_file=str(prefixes["val"]),
        test_file=str(prefixes["test"]),
        max_tokens_per_batch=160,
        num_beams=2,
        max_source_length=32,
        max_target_length=32,
    )
    values = dict(
        output_dir=str(output_dir),
        do_train=True,
        max_steps=8,
        learning_rate=3e-3,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=7,
    )
    values.update(training)
    return model_args, data_args, Seq2SeqTrainingArguments(**values)


def logged_losses(output_dir):
    history = json.loads((Path(output_dir) / "trainer_state.json").read_text())["log_history"]
    return {entry["step"]: entry["loss"] for entry in history if "loss" in entry}


def test_train_evaluate_and_predict_with_bleu(data, tmp_path):
    metrics = run_translation(
        *arguments(data, tmp_path, do_eval=True, do_predict=True, predict_with_generate=True, max_steps=24)
    )
    for name in ("eval_bleu", "eval_chrf", "predict_bleu", "predict_chrf", "eval_gen_len"):
        assert name in metrics and metrics[name] >= 0
    losses = logged_losses(tmp_path)
    assert losses[24] < losses[1]
    predictions = (tmp_path / "generated_predictions.txt").read_text().splitlines()
    assert len(predictions) == 24
    model = AutoModelForSeq2SeqLM.from_pretrained(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert model.generation_config.num_beams == 2 and len(tokenizer) <= model.config.vocab_size


def test_a_killed_run_resumes_on_the_same_loss_curve(data, tmp_path):
    class Killed(Exception):
        pass

    class KillAfterStep4(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 4:  # checkpoint-4 is written; the run dies before its fifth step
                raise Killed

    uninterrupted = tmp_path / "uninterrupted"
    run_translation(*arguments(data, uninterrupted, save_strategy="steps", save_steps=4))
    interrupted = tmp_path / "interrupted"
    with pytest.raises(Killed):
        run_translation(*arguments(data, interrupted, save_strategy="steps", save_steps=4), callbacks=[KillAfterStep4()])
    run_translation(*arguments(data, interrupted, save_strategy="steps", save_steps=4, resume_from_checkpoint="true"))

    expected, resumed = logged_losses(uninterrupted), logged_losses(interrupted)
    assert sorted(resumed) == list(range(1, 9))
    for step in range(5, 9):
        assert resumed[step] == pytest.approx(expected[step], abs=1e-4), step
    assert expected[5] != expected[8]


def test_checkpoint_averaging_averages_every_weight(data, tmp_path):
    run_translation(*arguments(data, tmp_path, save_strategy="steps", save_steps=2, max_steps=6))
    checkpoints = last_checkpoints(tmp_path, 3)
    assert [c.name for c in checkpoints] == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    averaged = average_checkpoints(checkpoints)
    models = [AutoModelForSeq2SeqLM.from_pretrained(c) for c in checkpoints]
    for name, parameter in averaged.named_parameters():
        mean = sum(dict(m.named_parameters())[name] for m in models) / 3
        assert torch.allclose(parameter, mean, atol=1e-6), name

    out = tmp_path / "averaged"
    result = subprocess.run(
        [sys.executable, SCRIPTS / "average_checkpoints.py", "--run_dir", tmp_path, "--last", "3", "--output_dir", out],
        capture_output=True, text=True, check=True,
    )
    assert "averaged 3 checkpoints" in result.stdout
    reloaded = AutoModelForSeq2SeqLM.from_pretrained(out)
    assert all(torch.equal(p, dict(averaged.named_parameters())[n]) for n, p in reloaded.named_parameters())
    assert AutoTokenizer.from_pretrained(out) is not None
    with pytest.raises(ValueError, match="fewer than the 9 to average"):
        last_checkpoints(tmp_path, 9)


def test_translate_script_streams_one_line_per_input(data, tmp_path):
    run_translation(*arguments(data, tmp_path, max_steps=2))
    sources = ["12", "40021", "7"]
    result = subprocess.run(
        [sys.executable, SCRIPTS / "translate.py", "--model", tmp_path, "--num_beams", "2", "--max_new_tokens", "6"],
        input="\n".join(sources) + "\n", capture_output=True, text=True, check=True,
    )
    assert len(result.stdout.splitlines()) == len(sources)


@pytest.mark.parametrize(
    "change, error, message",
    [
        (lambda m, d, t: setattr(d, "train_file", d.train_file + "-missing"), FileNotFoundError, r"neither .*-missing.digits nor"),
        (lambda m, d, t: setattr(d, "source_lang", "roman"), FileNotFoundError, r"No 'roman' side"),
        (lambda m, d, t: setattr(d, "target_lang", None), ValueError, r"Set both --source_lang and --target_lang"),
        (lambda m, d, t: setattr(m, "config_overrides", TINY_MODEL + ",pad_token_id=9"), None, None),
        (lambda m, d, t: setattr(t, "resume_from_checkpoint", str(Path(d.train_file).parent)), ValueError, r"is not a training checkpoint \(no trainer_state.json\)"),
        (lambda m, d, t: setattr(m, "model_name_or_path", str(Path(d.train_file).parent)), ValueError, r"is not a saved model \(no config.json\)"),
        (lambda m, d, t: setattr(d, "length_penalty", 0.6) or setattr(d, "num_beams", 1), ValueError, r"generation settings .* do not fit together"),
        (lambda m, d, t: setattr(d, "val_max_target_length", 100), ValueError, r"--val_max_target_length 100 is longer than the model's max_position_embeddings \(64\)"),
    ],
    ids=[
        "missing file", "unknown language", "no target language", "config ids follow the tokenizer", "not a checkpoint",
        "not a model", "length penalty without beams", "generation longer than the positions",
    ],
)
def test_bad_input_is_refused_before_training(data, tmp_path, change, error, message):
    model_args, data_args, training_args = arguments(data, tmp_path / "out", max_steps=2)
    change(model_args, data_args, training_args)
    if error is None:  # training from scratch takes the special ids from the tokenizer: nothing to refuse
        run_translation(model_args, data_args, training_args)
        assert AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "out").config.pad_token_id == 0
        return
    with pytest.raises(error, match=message):
        run_translation(model_args, data_args, training_args)
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_the_trainers_label_smoothing_flag_runs_as_the_models_own_loss_with_the_same_values(data, tmp_path, monkeypatch):
    # The Trainer's smoother (labels taken from the model, every padded position projected onto the vocabulary) and
    # the model's packed loss give the same loss at every step, with gradient accumulation; without dropout, so that
    # the two paths draw no random numbers
    def training(output_dir):
        model_args, data_args, training_args = arguments(
            data, output_dir, label_smoothing_factor=0.1, gradient_accumulation_steps=2, max_steps=6
        )
        model_args.config_overrides += ",dropout=0.0"
        run_translation(model_args, data_args, training_args)
        return logged_losses(output_dir)

    with monkeypatch.context() as patched:  # the Trainer's own path, as before the model took the flag
        patched.setattr(TranslationTrainer, "smooth_labels_in_the_model", lambda self: None)
        trainers_smoother = training(tmp_path / "trainer")
    assert AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "trainer").config.label_smoothing == 0

    def refuse(*args, **kwargs):
        raise AssertionError("the Trainer's LabelSmoother ran")

    monkeypatch.setattr(LabelSmoother, "__call__", refuse)
    models_loss = training(tmp_path / "model")
    assert AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "model").config.label_smoothing == 0.1
    assert sorted(models_loss) == sorted(trainers_smoother) == list(range(1, 7))
    assert models_loss == pytest.approx(trainers_smoother, rel=1e-5)


def test_fine_tuning_continues_from_a_saved_model(data, tmp_path):
    run_translation(*arguments(data, tmp_path / "base", max_steps=6))
    base = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "base")
    model_args, data_args, training_args = arguments(data, tmp_path / "tuned", max_steps=2)
    model_args = ModelArguments(model_name_or_path=str(tmp_path / "base"))  # its own tokenizer, its own config
    run_translation(model_args, data_args, training_args)
    tuned = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "tuned")
    assert tuned.config.to_diff_dict() | {"_name_or_path": ""} == base.config.to_diff_dict() | {"_name_or_path": ""}
    assert not torch.equal(tuned.lm_head.weight, base.lm_head.weight)  # trained further, from the saved weights
    first_step = logged_losses(tmp_path / "tuned")[1]
    assert first_step < logged_losses(tmp_path / "base")[1]  # starts where the base model left off, not from scratch


def test_fine_tuning_with_a_mismatched_tokenizer_is_refused(data, tmp_path):
    run_translation(*arguments(data, tmp_path / "model", max_steps=1))
    model_args, data_args, training_args = arguments(data, tmp_path / "again", max_steps=1)
    other = tmp_path / "other-tokenizer"
    train_bpe_tokenizer(["ganz andere Wörter"] * 50 + ["x y z"] * 50, vocab_size=400).save_pretrained(other)
    model_args = ModelArguments(model_name_or_path=str(tmp_path / "model"), tokenizer_name=str(other))
    if len(AutoTokenizer.from_pretrained(other)) <= AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "model").config.vocab_size:
        pytest.skip("the other tokenizer happens to fit the vocabulary")
    with pytest.raises(ValueError, match=r"The tokenizer does not match the model config \(vocabulary"):
        run_translation(model_args, data_args, training_args)


def test_accelerate_loop_refuses_lengths_beyond_the_positions_before_training(data, tmp_path):
    model_args, data_args, _ = arguments(data, tmp_path)
    data_args.max_source_length = 100  # the tiny model has 64 positions
    with pytest.raises(ValueError, match=r"--max_source_length 100 is longer than the model's max_position_embeddings"):
        train_with_accelerate(model_args, data_args, LoopArguments(output_dir=str(tmp_path / "loop"), max_steps=1))
    assert not (tmp_path / "loop").exists()


def test_an_earlier_runs_checkpoints_are_not_trained_over(data, tmp_path):
    run_translation(*arguments(data, tmp_path, save_strategy="steps", save_steps=1, max_steps=1))
    with pytest.raises(ValueError, match=r"holds checkpoints of an earlier run. Continue it with --resume_from_checkpoint"):
        run_translation(*arguments(data, tmp_path, max_steps=1))


def truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


DAMAGE = {
    "weights cut short": lambda folder, state: truncate(folder / "model.safetensors"),
    "optimizer state missing": lambda folder, state: (folder / state).unlink(),
    "optimizer state cut short": lambda folder, state: truncate(folder / state),
}


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_resuming_skips_a_checkpoint_half_written_by_a_kill(data, tmp_path, damage, caplog):
    run_translation(*arguments(data, tmp_path, save_strategy="steps", save_steps=2, max_steps=4))
    damage(tmp_path / "checkpoint-4", "optimizer.pt")  # as a kill while checkpoint-4 was being saved leaves it
    with pytest.raises(ValueError, match=r"checkpoint-4 is an incomplete checkpoint: .*--resume_from_checkpoint true"):
        run_translation(*arguments(data, tmp_path, save_strategy="steps", save_steps=2, max_steps=6,
                                   resume_from_checkpoint=str(tmp_path / "checkpoint-4")))
    run_translation(*arguments(data, tmp_path, save_strategy="steps", save_steps=2, max_steps=6, resume_from_checkpoint="true"))
    assert re.search(r"Skipping the incomplete checkpoint .*checkpoint-4: (missing optimizer.pt|\S+ does not load|\S+ is not a complete)", caplog.text)
    assert sorted(logged_losses(tmp_path)) == list(range(1, 7))  # resumed at checkpoint-2, trained on to step 6


def test_the_accelerate_loop_resumes_from_its_last_complete_checkpoint(data, tmp_path, caplog):
    model_args, data_args, _ = arguments(data, tmp_path)
    loop = dict(output_dir=str(tmp_path), max_steps=4, checkpointing_steps=2, logging_steps=1)
    train_with_accelerate(model_args, data_args, LoopArguments(**loop))
    truncate(tmp_path / "step_4" / "optimizer.bin")
    with pytest.raises(ValueError, match=r"step_4 is an incomplete checkpoint: optimizer.bin"):
        train_with_accelerate(model_args, data_args, LoopArguments(**{**loop, "resume_from_checkpoint": str(tmp_path / "step_4")}))
    history = train_with_accelerate(model_args, data_args, LoopArguments(**{**loop, "max_steps": 6, "resume_from_checkpoint": "true"}))
    assert "Skipping the incomplete checkpoint" in caplog.text and "step_4: optimizer.bin" in caplog.text
    assert [entry["step"] for entry in history] == [3, 4, 5, 6]  # resumed at step_2


MEMORY_REUSE_PROBE = """
import resource, torch
from vanilla_transformer.training import keep_freed_memory_for_reuse
def page_faults():
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        torch.ones(16 * 2**20)  # 64 MiB, freed at once, as a step's activations are
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start
before = page_faults()
keep_freed_memory_for_reuse()
page_faults()  # the first block of the heap is mapped once
print(before, page_faults())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the allocator setting is glibc's")
def test_training_on_the_cpu_reuses_freed_memory_instead_of_mapping_it_again():
    # in a fresh process: the setting is the process's for good
    result = subprocess.run([sys.executable, "-c", MEMORY_REUSE_PROBE], capture_output=True, text=True, check=True)
    before, after = map(int, result.stdout.split())
    assert before > 20 * 16_000  # every 64 MiB block was mapped and zeroed page by page
    assert after < before / 100
