"""A plain training loop written with 🤗 Accelerate, for users who want their own loop rather than the Trainer:
the same data, tokenizer and model handling as `training.py`, with gradient accumulation, mixed precision, and
checkpoints through `accelerator.save_state` that a restarted run resumes from. Runs on one device or, under
`accelerate launch` / `torchrun`, on several (GPUs, or CPU processes)."""

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import DataCollatorForSeq2Seq, get_scheduler

from ..data.translation_data import TokenBatchSampler
from .checkpoint_integrity import (
    ACCELERATE_CHECKPOINT,
    ACCELERATE_STATE_FILES,
    last_complete_checkpoint,
    require_complete,
)
from .trainer import (
    DataTrainingArguments,
    ModelArguments,
    check_lengths_fit,
    load_tokenizer_and_model,
    noam_peak_learning_rate,
    open_splits,
    tokenize_splits,
)


@dataclass
class LoopArguments:
    """The loop's own settings; the model and data flags are those of run_translation.py."""

    output_dir: str = field(metadata={"help": "Where checkpoints (step_<n>/) and the final model are saved."})
    max_steps: int = field(default=1000, metadata={"help": "Optimizer steps to train for."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Pairs per batch, unless --max_tokens_per_batch."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Batches whose gradients make one step."})
    learning_rate: float = field(default=5e-4, metadata={"help": "Peak learning rate (ignored with --noam_learning_rate)."})
    warmup_steps: int = field(default=0, metadata={"help": "Linear warmup steps."})
    adam_beta2: float = field(default=0.98, metadata={"help": "Adam's beta2 (the paper: 0.98)."})
    adam_epsilon: float = field(default=1e-9, metadata={"help": "Adam's epsilon (the paper: 1e-9)."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})
    mixed_precision: str = field(default="no", metadata={"help": "'no', 'fp16' or 'bf16'."})
    checkpointing_steps: int | None = field(default=None, metadata={"help": "Save the training state every N steps."})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "A step_<n> directory to resume, or true for the last complete one of --output_dir."}
    )
    logging_steps: int = field(default=10, metadata={"help": "Log the loss every N steps."})
    seed: int = field(default=42, metadata={"help": "Seed of the initialization, dropout and batch order."})


def train_with_accelerate(model_args: ModelArguments, data_args: DataTrainingArguments, args: LoopArguments) -> list[dict]:
    """Trains and saves the model and tokenizer to `args.output_dir`; returns the logged `{"step", "loss"}` records."""
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        cpu=not torch.cuda.is_available(),
    )
    resume, start_step = resolve_resume(args.resume_from_checkpoint, args.output_dir)
    set_seed(args.seed)
    tokenizer, model = load_tokenizer_and_model(model_args, data_args)
    splits = open_splits(data_args, model_args, do_train=True, do_eval=False, do_predict=False, tokenizer=tokenizer)
    check_lengths_fit(data_args, model.config)
    output_dir = args.output_dir if accelerator.is_main_process else None
    train = tokenize_splits(splits, tokenizer, data_args, output_dir)["train"]

    collator = DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100)
    # The loader's own generator: starting an epoch then never draws from the global RNG that dropout uses, so a
    # resumed run's dropout continues exactly where the checkpoint left it
    generator = torch.Generator().manual_seed(args.seed)
    if data_args.max_tokens_per_batch:
        sampler = TokenBatchSampler.for_tokenized_pairs(train, data_args.max_tokens_per_batch, seed=args.seed)
        loader = DataLoader(train, batch_sampler=sampler, collate_fn=collator, generator=generator)
    else:
        loader = DataLoader(
            train, batch_size=args.per_device_train_batch_size, shuffle=True, collate_fn=collator, generator=generator
        )

    learning_rate = args.learning_rate
    if data_args.noam_learning_rate:
        learning_rate = noam_peak_learning_rate(model.config.d_model, args.warmup_steps)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate, betas=(0.9, args.adam_beta2), eps=args.adam_epsilon)
    # A prepared scheduler steps once per process at every optimizer step (accelerate's convention for one
    # schedule over the global batch): counted in those steps, the schedule is the same on any number of processes
    scheduler = get_scheduler(
        "inverse_sqrt" if data_args.noam_learning_rate else "linear",
        optimizer,
        num_warmup_steps=args.warmup_steps * accelerator.num_processes,
        num_training_steps=args.max_steps * accelerator.num_processes,
    )
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    if resume:
        accelerator.load_state(resume)  # weights, optimizer, schedule, RNG states

    batches_per_epoch = len(loader) // args.gradient_accumulation_steps
    if batches_per_epoch == 0:
        raise ValueError("The training data holds fewer batches than --gradient_accumulation_steps.")
    step, history = start_step, []
    progress = tqdm(total=args.max_steps, initial=step, desc="training", disable=not accelerator.is_local_main_process)
    model.train()
    while step < args.max_steps:
        epoch, done_in_epoch = divmod(step, batches_per_epoch)
        set_epoch(loader, epoch)
        batches = accelerator.skip_first_batches(loader, done_in_epoch * args.gradient_accumulation_steps) if done_in_epoch else loader
        for batch in batches:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            if not accelerator.sync_gradients:
                continue
            step += 1
            progress.update()
            if step % args.logging_steps == 0 or step == args.max_steps:
                mean_loss = accelerator.reduce(loss.detach(), reduction="mean").item()
                history.append({"step": step, "loss": mean_loss})
                progress.set_postfix(loss=f"{mean_loss:.3f}")
            if args.checkpointing_steps and step % args.checkpointing_steps == 0:
                accelerator.save_state(str(Path(args.output_dir) / f"step_{step}"))
            if step >= args.max_steps:
                break
    progress.close()

    accelerator.wait_for_everyone()
    # The full weights, gathered from the shards under FSDP (every rank takes part), the model's own otherwise
    state_dict = accelerator.get_state_dict(model)
    accelerator.unwrap_model(model).save_pretrained(
        args.output_dir, is_main_process=accelerator.is_main_process, save_function=accelerator.save, state_dict=state_dict
    )
    if accelerator.is_main_process:
        tokenizer.save_pretrained(args.output_dir)
        (Path(args.output_dir) / "loss_history.json").write_text(json.dumps(history, indent=1) + "\n")
    accelerator.end_training()
    print(f"train_accelerate finished on rank {accelerator.process_index} of {accelerator.num_processes}", flush=True)
    return history


def resolve_resume(checkpoint: str | None, output_dir: str) -> tuple[str | None, int]:
    """(checkpoint folder, its step) to resume from: a step_<n> folder, or `true` / `last` for the last complete one
    of `output_dir`; (None, 0) for a fresh start. Incomplete checkpoints are refused (named) or skipped (`true`)."""
    if checkpoint is None:
        return None, 0
    if checkpoint.lower() in ("true", "last"):
        found = last_complete_checkpoint(output_dir, ACCELERATE_CHECKPOINT, ACCELERATE_STATE_FILES)
        if found is None:
            raise ValueError(f"--resume_from_checkpoint {checkpoint}: {output_dir} holds no complete step_<n> checkpoint to resume.")
        checkpoint = str(found)
    match = re.fullmatch(ACCELERATE_CHECKPOINT, Path(checkpoint).name)
    if not Path(checkpoint).is_dir() or match is None:
        raise ValueError(
            f"--resume_from_checkpoint {checkpoint} is not a checkpoint of this loop: give a step_<n> directory "
            "that --checkpointing_steps wrote, or `true` for the last complete one."
        )
    require_complete(checkpoint, ACCELERATE_STATE_FILES)
    return checkpoint, int(match.group(1))


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """A new batch order every epoch, the same in every process and in a resumed run."""
    loader.set_epoch(epoch)  # accelerate's loaders reseed their own sampler
    batch_sampler = getattr(getattr(loader, "batch_sampler", None), "batch_sampler", None)
    if hasattr(batch_sampler, "set_epoch"):
        batch_sampler.set_epoch(epoch)
