"""Training and evaluating a translation model with the `Seq2SeqTrainer`, with the flags of the transformers
example `run_translation.py` and the paper's recipe (section 5): Adam with beta2 = 0.98 and eps = 1e-9, the
"Noam" learning rate, label smoothing 0.1, batches of about N tokens, beam search with length penalty at test time.

Every check on the data, the tokenizer, the model and the output directory runs before training starts.
"""

import ctypes
import logging
import os
import platform
import re
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch
from torch.utils.data import DataLoader
from transformers import (
    AutoConfig,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    TrainerCallback,
    set_seed,
)
from transformers.trainer_utils import get_last_checkpoint

from ..configuration_vanilla_transformer import VanillaTransformerConfig
from ..data.tokenization import check_tokenizer_matches_config, is_multilingual, use_language_codes
from ..data.tokenized_corpus import PairFilter, tokenize_once
from ..data.translation_data import (
    ParallelTextFiles,
    TokenBatchSampler,
    TranslationRecords,
    hub_split_records,
    open_translation_file,
)
from .checkpoint_integrity import TRAINER_CHECKPOINT, TRAINER_STATE_FILES, last_complete_checkpoint, require_complete
from .evaluation import TranslationMetrics, decode_for_metrics
from .hub import model_card, read_metrics

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    """Which model and tokenizer to train: a saved or pushed model to fine-tune, or a config to train from scratch."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A saved model directory or Hub repo id to fine-tune."}
    )
    config_name: str | None = field(
        default=None,
        metadata={"help": "A config (directory or config.json) to train from scratch; the paper's base model if unset."},
    )
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "Config fields to change when training from scratch, e.g. 'd_model=256,encoder_layers=3'."},
    )
    tokenizer_name: str | None = field(
        default=None, metadata={"help": "Tokenizer directory or repo id, if not the model's (scripts/train_tokenizer.py)."}
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Where downloads from the Hub are cached."})
    model_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of a Hub model."})
    token: str | None = field(default=None, metadata={"help": "Hub token (default: HF_TOKEN or the saved login)."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow a Hub repo's own model code."})
    attn_implementation: str = field(default="sdpa", metadata={"help": "'sdpa', 'eager' or a flash attention kernel."})


@dataclass
class DataTrainingArguments:
    """The data, its preprocessing, the batching and the evaluation decoding."""

    source_lang: str | None = field(default=None, metadata={"help": "Source language key, e.g. 'de'; for NLLB or M2M100 the tokenizer's language code (deu_Latn, de)."})
    target_lang: str | None = field(default=None, metadata={"help": "Target language key, e.g. 'en'; for NLLB or M2M100 the tokenizer's language code (eng_Latn, en)."})
    dataset_name: str | None = field(default=None, metadata={"help": "A dataset of the Hub (needs the network)."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "The Hub dataset's configuration."})
    train_file: str | None = field(
        default=None,
        metadata={
            "help": "A .json/.jsonl file of {'translation': {lang: text}} records, or a prefix P of parallel text "
            "files P.<source_lang> and P.<target_lang> (plain or .gz, one sentence per line)."
        },
    )
    validation_file: str | None = field(default=None, metadata={"help": "Like --train_file, for evaluation."})
    test_file: str | None = field(default=None, metadata={"help": "Like --train_file, for --do_predict."})
    max_source_length: int = field(default=128, metadata={"help": "Longer sources are truncated (in tokens)."})
    max_target_length: int = field(default=128, metadata={"help": "Longer training targets are truncated."})
    val_max_target_length: int | None = field(
        default=None, metadata={"help": "Longest evaluation target, and generation's max_length; max_target_length if unset."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training pairs."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N evaluation pairs."})
    max_predict_samples: int | None = field(default=None, metadata={"help": "Use only the first N test pairs."})
    num_beams: int | None = field(default=None, metadata={"help": "Beam size for evaluation (the paper: 4)."})
    length_penalty: float | None = field(default=None, metadata={"help": "Beam search length penalty alpha (the paper: 0.6)."})
    max_tokens_per_batch: int | None = field(
        default=None,
        metadata={
            "help": "Batch by tokens instead of --per_device_train_batch_size: similar-length pairs, at most N padded "
            "source (and target) tokens per batch and device (the paper: 25000)."
        },
    )
    noam_learning_rate: bool = field(
        default=False,
        metadata={
            "help": "The paper's schedule, lr = d_model^-0.5 * min(step^-0.5, step * warmup^-1.5): sets "
            "--learning_rate d_model^-0.5 * warmup^-0.5 and --lr_scheduler_type inverse_sqrt (use --warmup_steps)."
        },
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Start over in an --output_dir that holds checkpoints of an earlier run."}
    )
    preprocessing_num_workers: int | None = field(
        default=None,
        metadata={"help": "Processes that tokenize a corpus (default: one per core; 1: one process on every core)."},
    )
    filter_pairs: bool = field(
        default=False,
        metadata={
            "help": "Drop training pairs that would harm training instead of refusing the corpus (crawled corpora): "
            "an empty side, a side longer than --max_source_length / --max_target_length tokens, sides whose lengths "
            "differ more than --filter_length_ratio times. Counts are logged, line numbers written to "
            "--output_dir/dropped_train_pairs.tsv."
        },
    )
    filter_length_ratio: float = field(
        default=3.0, metadata={"help": "With --filter_pairs: the largest ratio of the two sides' token counts kept."}
    )
    tokenized_cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Where tokenized corpora are cached and reused by later runs and other processes (default: "
            "HF_DATASETS_CACHE/vanilla_transformer/tokenized)."
        },
    )
    overwrite_cache: bool = field(default=False, metadata={"help": "Tokenize the data again instead of reusing the cache."})

    def __post_init__(self):
        if self.val_max_target_length is None:
            self.val_max_target_length = self.max_target_length


class TranslationTrainer(Seq2SeqTrainer):
    """A `Seq2SeqTrainer` that can batch by tokens (`max_tokens_per_batch`) as the paper does, and that smooths the
    labels (`--label_smoothing_factor`) in the model's own loss."""

    def __init__(self, *args, max_tokens_per_batch: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_tokens_per_batch = max_tokens_per_batch
        self.smooth_labels_in_the_model()

    def smooth_labels_in_the_model(self) -> None:
        """`--label_smoothing_factor` becomes the model's `config.label_smoothing`, and the Trainer's own smoother is
        switched off. The Trainer's smoother takes the labels away from the model and smooths the logits of every
        padded target position; the model's loss (`label_smoothed_cross_entropy`) computes the same value from the
        labelled positions alone, skipping the padding's layers and vocabulary projection. Models without the field
        keep the Trainer's smoother."""
        config = getattr(self.model, "config", None)
        if self.label_smoother is None or not isinstance(config, VanillaTransformerConfig):
            return
        factor = self.args.label_smoothing_factor
        if config.label_smoothing not in (0, factor):
            logger.info("--label_smoothing_factor %s replaces the model's label_smoothing %s", factor, config.label_smoothing)
        config.label_smoothing = factor
        self.label_smoother = None

    def get_train_dataloader(self) -> DataLoader:
        if self.max_tokens_per_batch is None:
            return super().get_train_dataloader()
        dataset = self._remove_unused_columns(self.train_dataset, description="Training")
        sampler = TokenBatchSampler.for_tokenized_pairs(dataset, self.max_tokens_per_batch, seed=self.args.seed)
        loader = DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory and torch.cuda.is_available(),
        )
        # With several processes, accelerate hands each one its own share of the batches
        return self.accelerator.prepare(loader)


    def create_model_card(self, language=None, dataset=None, **kwargs) -> None:
        """The package's model card (Hub metadata, results, a usage snippet that runs) instead of the generic one;
        written to --output_dir, so that --push_to_hub uploads it."""
        if not self.is_world_process_zero():
            return
        output_dir = Path(self.args.output_dir)
        card = model_card(
            self.hub_model_id or output_dir.name,
            self.model,
            languages=[language] if isinstance(language, str) else language,
            datasets=[dataset] if isinstance(dataset, str) else dataset,
            metrics=read_metrics(output_dir),
        )
        card.save(output_dir / "README.md")


def noam_peak_learning_rate(d_model: int, warmup_steps: int) -> float:
    """The peak of lrate = d_model^-0.5 * min(step^-0.5, step * warmup^-1.5), reached at step = warmup. With linear
    warmup to it and decay as 1/sqrt(step) after it (transformers' "inverse_sqrt" schedule, timescale = warmup)
    this is exactly the paper's formula."""
    if warmup_steps <= 0:
        raise ValueError("--noam_learning_rate needs --warmup_steps (the paper: 4000).")
    return d_model**-0.5 * warmup_steps**-0.5


def check_lengths_fit(data_args: DataTrainingArguments, config) -> None:
    """Refuses, before any training, lengths that the model's position table cannot hold."""
    positions = config.max_position_embeddings
    for flag in ("max_source_length", "max_target_length", "val_max_target_length"):
        if getattr(data_args, flag) > positions:
            raise ValueError(
                f"--{flag} {getattr(data_args, flag)} is longer than the model's max_position_embeddings ({positions}): "
                f"pass --{flag} {positions} or less, or build the model with more positions."
            )


def use_cpu_when_no_accelerator() -> None:
    """Lets `torchrun` start several CPU processes (gloo) when the machine has no GPU: accelerate otherwise leaves
    each process on its own."""
    if not torch.cuda.is_available():
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")


def log_progress_to_stderr() -> None:
    """Shows the package's own INFO messages (the tokenized data: built or reused, and where; dropped pairs), as the
    transformers example scripts show theirs; other libraries keep their own levels."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("vanilla_transformer").setLevel(logging.INFO)


def keep_freed_memory_for_reuse() -> None:
    """Makes glibc's malloc keep freed blocks for the next step instead of giving them back to the system.

    By default glibc serves every block over a threshold (which it raises only up to 32 MiB) with its own mmap and
    unmaps it when freed, so each training step on the CPU maps its activations afresh and the kernel zeroes every
    page again: on 2 cores that was about 15% of a step of the quick start's model (2.6 million page faults per 100
    steps, 150 thousand with this). Only the process's own allocator is changed; no-op outside glibc."""
    if platform.libc_ver()[0] != "glibc":
        return
    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    libc.mallopt(m_mmap_threshold, 1 << 30)  # blocks up to 1 GiB come from the reusable heap
    libc.mallopt(m_trim_threshold, 2**31 - 1)  # whose free top is not handed back after each step


def resolve_resume_checkpoint(training_args: Seq2SeqTrainingArguments, overwrite_output_dir: bool) -> str | None:
    """The checkpoint to resume from, or None; refuses what is not a checkpoint and never trains over an earlier
    run's checkpoints unless asked to."""
    resume = training_args.resume_from_checkpoint
    output_dir = Path(training_args.output_dir)
    if resume is not None and str(resume).lower() in ("true", "last"):
        resume = last_complete_checkpoint(output_dir, TRAINER_CHECKPOINT, TRAINER_STATE_FILES)
        if resume is None:
            raise ValueError(
                f"--resume_from_checkpoint {training_args.resume_from_checkpoint}: {output_dir} holds no complete "
                "checkpoint-* directory to resume."
            )
    if resume is not None:
        if not (Path(resume) / "trainer_state.json").is_file() and not re.fullmatch(TRAINER_CHECKPOINT, Path(resume).name):
            raise ValueError(
                f"--resume_from_checkpoint {resume} is not a training checkpoint (no trainer_state.json). Give a "
                f"checkpoint-<step> directory written by an earlier run, e.g. {output_dir}/checkpoint-1000."
            )
        require_complete(resume, TRAINER_STATE_FILES)
        return str(resume)
    if training_args.do_train and output_dir.is_dir() and get_last_checkpoint(output_dir) and not overwrite_output_dir:
        raise ValueError(
            f"{output_dir} holds checkpoints of an earlier run. Continue it with --resume_from_checkpoint true, or "
            "start over with --overwrite_output_dir (its old checkpoints are then replaced as the new run saves)."
        )
    return None


def open_splits(
    data_args: DataTrainingArguments,
    model_args: ModelArguments,
    do_train: bool,
    do_eval: bool,
    do_predict: bool,
    tokenizer: PreTrainedTokenizerBase,
) -> dict[str, ParallelTextFiles | TranslationRecords]:
    """The sentence pairs of each split that a phase needs, opened (files found, languages checked), not yet read.
    With a multilingual tokenizer (NLLB, M2M100) the languages are its codes, and the data's keys their part before
    "_" (deu_Latn: deu), as in transformers' example."""
    if data_args.source_lang is None or data_args.target_lang is None:
        raise ValueError("Set both --source_lang and --target_lang (the language keys of the data, e.g. de and en).")
    source_lang, target_lang = data_args.source_lang, data_args.target_lang
    if is_multilingual(tokenizer):
        source_lang, target_lang = source_lang.split("_")[0], target_lang.split("_")[0]
    wanted = {
        "train": (do_train, data_args.train_file, data_args.max_train_samples),
        "validation": (do_eval, data_args.validation_file, data_args.max_eval_samples),
        "test": (do_predict, data_args.test_file, data_args.max_predict_samples),
    }
    hub = None
    if data_args.dataset_name is not None:
        hub = datasets.load_dataset(
            data_args.dataset_name, data_args.dataset_config_name, cache_dir=model_args.cache_dir, token=model_args.token
        )
    splits = {}
    for split, (needed, path, limit) in wanted.items():
        if not needed:
            continue
        if path is not None:
            splits[split] = open_translation_file(path, source_lang, target_lang, split, limit)
            continue
        if hub is not None and split in hub:
            name, config = data_args.dataset_name, data_args.dataset_config_name
            splits[split] = hub_split_records(hub[split], name, config, split, source_lang, target_lang, limit)
            continue
        flag = {"train": "--train_file", "validation": "--validation_file", "test": "--test_file"}[split]
        phase = {"train": "train", "validation": "eval", "test": "predict"}[split]
        raise ValueError(f"--do_{phase} needs {split} data: pass {flag} or a --dataset_name that has a {split!r} split.")
    if not splits:
        raise ValueError("Nothing to do: pass --do_train, --do_eval and/or --do_predict.")
    return splits


def load_tokenizer_and_model(
    model_args: ModelArguments, data_args: DataTrainingArguments
) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """Fine-tunes `--model_name_or_path`, or builds a new model from `--config_name` / the paper's base config with
    the tokenizer's vocabulary size and special ids. A multilingual tokenizer (NLLB, M2M100) is set to the languages'
    codes, and the target's becomes the first generated token."""
    hub_kwargs = dict(cache_dir=model_args.cache_dir, revision=model_args.model_revision, token=model_args.token)
    source = model_args.model_name_or_path
    if source is not None and Path(source).exists() and not (Path(source) / "config.json").is_file():
        raise ValueError(f"--model_name_or_path {source} is not a saved model (no config.json); use --config_name to train from scratch.")
    tokenizer_source = model_args.tokenizer_name or source
    if tokenizer_source is None:
        raise ValueError("Give a tokenizer: --tokenizer_name DIR (see scripts/train_tokenizer.py) or a --model_name_or_path that has one.")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source, **hub_kwargs)

    if source is not None:
        model = AutoModelForSeq2SeqLM.from_pretrained(
            source, trust_remote_code=model_args.trust_remote_code, attn_implementation=model_args.attn_implementation, **hub_kwargs
        )
    else:
        if model_args.config_name is not None:
            config = AutoConfig.from_pretrained(model_args.config_name, **hub_kwargs)
        else:
            config = VanillaTransformerConfig()
        if model_args.config_overrides:
            config.update_from_string(model_args.config_overrides)
        values = config.to_dict()
        values.update(
            vocab_size=len(tokenizer),
            decoder_vocab_size=len(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.bos_token_id,
            decoder_start_token_id=tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.pad_token_id,
        )
        config = type(config).from_dict(values)  # rebuilt, so every value is checked again
        model = AutoModelForSeq2SeqLM.from_config(config, attn_implementation=model_args.attn_implementation)
    check_tokenizer_matches_config(tokenizer, model.config)
    if data_args.source_lang is not None and data_args.target_lang is not None:
        use_language_codes(tokenizer, model.generation_config, data_args.source_lang, data_args.target_lang)
    return tokenizer, model


def tokenize_splits(
    splits: dict, tokenizer: PreTrainedTokenizerBase, data_args: DataTrainingArguments, output_dir: str | None = None
) -> dict[str, datasets.Dataset]:
    """Token ids of sources (`input_ids`) and targets (`labels`, ending with </s>), tokenized once and memory-mapped
    from the cache (see data/tokenized_corpus.py). Every process calls this: the first tokenizes, the others wait for
    it and reuse its cache. Training pairs are truncated to the max lengths, or filtered with --filter_pairs (the
    dropped pairs' line numbers go to `output_dir`); evaluation pairs are never filtered."""
    tokenized = {}
    for split, pairs in splits.items():
        filtering = split == "train" and data_args.filter_pairs
        corpus = tokenize_once(
            pairs,
            tokenizer,
            split,
            max_source_length=data_args.max_source_length,
            max_target_length=data_args.max_target_length if split == "train" else data_args.val_max_target_length,
            pair_filter=PairFilter(data_args.filter_length_ratio) if filtering else None,
            cache_root=data_args.tokenized_cache_dir,
            overwrite=data_args.overwrite_cache,
            num_workers=data_args.preprocessing_num_workers,
            filter_flag="--filter_pairs" if split == "train" else "",
        )
        if output_dir is not None:
            corpus.write_dropped_report(output_dir)
        tokenized[split] = corpus.dataset
    return tokenized


def run_translation(
    model_args: ModelArguments,
    data_args: DataTrainingArguments,
    training_args: Seq2SeqTrainingArguments,
    callbacks: list[TrainerCallback] | None = None,
) -> dict[str, float]:
    """Trains, evaluates and/or predicts as the flags say; returns the metrics of every phase that ran.
    `callbacks` go to the Trainer."""
    resume = resolve_resume_checkpoint(training_args, data_args.overwrite_output_dir)
    if training_args.device.type == "cpu":
        keep_freed_memory_for_reuse()
    set_seed(training_args.seed)
    tokenizer, model = load_tokenizer_and_model(model_args, data_args)
    splits = open_splits(data_args, model_args, training_args.do_train, training_args.do_eval, training_args.do_predict, tokenizer)

    check_lengths_fit(data_args, model.config)
    if training_args.ddp_find_unused_parameters is None:
        training_args.ddp_find_unused_parameters = False  # every parameter takes part in every step
    if data_args.noam_learning_rate:
        training_args.learning_rate = noam_peak_learning_rate(model.config.d_model, training_args.warmup_steps)
        training_args.lr_scheduler_type = "inverse_sqrt"
    generation = model.generation_config
    generation.max_length = data_args.val_max_target_length
    if data_args.num_beams is not None:
        generation.num_beams = data_args.num_beams
    if data_args.length_penalty is not None:
        generation.length_penalty = data_args.length_penalty
    try:  # now, not when the trained model is saved
        generation.validate(strict=True)
    except ValueError as error:
        raise ValueError(f"The generation settings (--num_beams, --length_penalty, ...) do not fit together: {error}") from None

    # After every cheap check: a bad flag is refused before minutes of tokenizing
    output_dir = training_args.output_dir if training_args.process_index == 0 else None
    tokenized = tokenize_splits(splits, tokenizer, data_args, output_dir)
    trainer = TranslationTrainer(
        model=model,
        args=training_args,
        train_dataset=tokenized.get("train"),
        eval_dataset=tokenized.get("validation"),
        processing_class=tokenizer,
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100),
        compute_metrics=TranslationMetrics(tokenizer) if training_args.predict_with_generate else None,
        max_tokens_per_batch=data_args.max_tokens_per_batch,
        callbacks=callbacks,
    )

    metrics = {}
    if training_args.do_train:
        result = trainer.train(resume_from_checkpoint=resume)
        trainer.save_model()  # the model, its generation config and the tokenizer, in --output_dir
        trainer.log_metrics("train", result.metrics)
        trainer.save_metrics("train", result.metrics)
        trainer.save_state()
        metrics.update(result.metrics)
    if training_args.do_eval:
        eval_metrics = trainer.evaluate(metric_key_prefix="eval")
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
        metrics.update(eval_metrics)
    if training_args.do_predict:
        prediction = trainer.predict(tokenized["test"], metric_key_prefix="predict")
        trainer.log_metrics("predict", prediction.metrics)
        trainer.save_metrics("predict", prediction.metrics)
        metrics.update(prediction.metrics)
        if training_args.predict_with_generate and trainer.is_world_process_zero():
            lines = decode_for_metrics(tokenizer, prediction.predictions)
            Path(training_args.output_dir, "generated_predictions.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if training_args.push_to_hub:
        trainer.push_to_hub(language=[data_args.source_lang, data_args.target_lang], dataset=data_args.dataset_name)
    return metrics

