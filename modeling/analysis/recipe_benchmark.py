"""The README's training recipe through the Trainer, timed two ways in one run: label smoothing by the Trainer's own
`LabelSmoother` (the Trainer takes the labels away and smooths the logits of every padded target position) and by
the model's packed loss (`--label_smoothing_factor` as `config.label_smoothing`, what `TranslationTrainer` does).

Both run the recipe's model, batches (`--max_tokens_per_batch`), optimizer and precision on the same data, from the
same initial weights, in alternating rounds, so that the machine's drift hits both alike."""

import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForSeq2SeqLM, DataCollatorForSeq2Seq, Seq2SeqTrainingArguments, TrainerCallback
from transformers.trainer_pt_utils import LabelSmoother

from ..configuration_vanilla_transformer import VanillaTransformerConfig
from ..data.tokenization import train_bpe_tokenizer
from ..data.tokenized_corpus import tokenize_once
from ..data.translation_data import ParallelTextFiles, translation_texts
from ..training.trainer import TranslationTrainer

# The de -> en recipe of the README's "Train a translator"
README_RECIPE = dict(
    config_overrides="d_model=256,encoder_layers=3,decoder_layers=3,encoder_attention_heads=4,decoder_attention_heads=4,"
    "encoder_ffn_dim=1024,decoder_ffn_dim=1024,dropout=0.05,max_position_embeddings=256",
    vocab_size=8000,
    max_tokens_per_batch=1024,
    learning_rate=1e-3,
    warmup_steps=300,
    label_smoothing=0.1,
)
LOSS_PATHS = ("trainer-label-smoother", "model-loss")


class StepClock(TrainerCallback):
    """The wall-clock time at the end of each optimizer step."""

    def __init__(self):
        self.times: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter())


def train_steps(path: str, model, tokenizer, dataset, steps: int, bf16: bool, attention: str, output_dir: Path) -> dict:
    """`steps` optimizer steps of the recipe along one loss path; steps/s over all but the first two (warm-up)."""
    model.config._attn_implementation = attention
    arguments = Seq2SeqTrainingArguments(
        output_dir=str(output_dir), max_steps=steps, learning_rate=README_RECIPE["learning_rate"],
        warmup_steps=README_RECIPE["warmup_steps"], adam_beta2=0.98, adam_epsilon=1e-9,
        label_smoothing_factor=README_RECIPE["label_smoothing"], save_strategy="no", report_to="none",
        disable_tqdm=True, logging_steps=steps, seed=0, bf16=bf16, use_cpu=bf16 and not torch.cuda.is_available(),
    )
    clock = StepClock()
    trainer = TranslationTrainer(
        model=model, args=arguments, train_dataset=dataset, processing_class=tokenizer,
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100),
        max_tokens_per_batch=README_RECIPE["max_tokens_per_batch"], callbacks=[clock],
    )
    if path == "trainer-label-smoother":  # what the Trainer did before the model took the flag
        model.config.label_smoothing = 0.0
        trainer.label_smoother = LabelSmoother(epsilon=README_RECIPE["label_smoothing"])
    result = trainer.train()
    measured = clock.times[2:]
    return {"steps_per_second": (len(measured) - 1) / (measured[-1] - measured[0]), "train_loss": result.training_loss}


def recipe_benchmark(corpus: str, langs: tuple[str, str], steps: int, rounds: int, threads: int, bf16: bool,
                     attention: str) -> dict:
    """Steps/s of the README recipe along both loss paths, `rounds` alternating rounds of `steps` steps each."""
    torch.set_num_threads(threads)
    pairs = ParallelTextFiles(corpus, *langs)
    tokenizer = train_bpe_tokenizer(translation_texts(pairs), vocab_size=README_RECIPE["vocab_size"])
    config = VanillaTransformerConfig(
        vocab_size=len(tokenizer), decoder_vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
        decoder_start_token_id=tokenizer.bos_token_id,
    )
    config.update_from_string(README_RECIPE["config_overrides"])
    torch.manual_seed(0)
    initial = AutoModelForSeq2SeqLM.from_config(config).state_dict()
    runs = {path: [] for path in LOSS_PATHS}
    with tempfile.TemporaryDirectory() as scratch:
        dataset = tokenize_once(pairs, tokenizer, "train", 128, 128, cache_root=Path(scratch) / "cache").dataset
        for _ in range(rounds):
            for path in LOSS_PATHS:
                model = AutoModelForSeq2SeqLM.from_config(config)
                model.load_state_dict(initial)
                runs[path].append(train_steps(path, model, tokenizer, dataset, steps, bf16, attention, Path(scratch) / path))
    median = {path: sorted(run["steps_per_second"] for run in results)[len(results) // 2] for path, results in runs.items()}
    return {
        "setup": {"corpus": corpus, "langs": list(langs), "steps": steps, "rounds": rounds, "threads": threads,
                  "bf16": bf16, "attn_implementation": attention, **README_RECIPE},
        "runs": runs,
        "median_steps_per_second": median,
        "ratio": median["model-loss"] / median["trainer-label-smoother"],
    }


def format_recipe_table(summary: dict) -> str:
    lines = ["| loss path | steps/s, each round | median | train loss, each round |", "| --- | --- | --- | --- |"]
    for path, runs in summary["runs"].items():
        speeds = ", ".join(f"{run['steps_per_second']:.2f}" for run in runs)
        losses = ", ".join(f"{run['train_loss']:.4f}" for run in runs)
        lines.append(f"| {path} | {speeds} | {summary['median_steps_per_second'][path]:.2f} | {losses} |")
    lines.append(f"model-loss / trainer-label-smoother: {summary['ratio']:.2f}x steps/s")
    return "\n".join(lines)
