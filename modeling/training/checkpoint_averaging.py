"""Checkpoint averaging (section 6.1: "we used a single model obtained by averaging the last 5 checkpoints").

The average of the weights of the last checkpoints of a run is a smoother model than any one of them."""

import re
from pathlib import Path

import torch
from transformers import AutoModelForSeq2SeqLM, PreTrainedModel


def last_checkpoints(run_dir: str | Path, count: int) -> list[Path]:
    """The `count` latest `checkpoint-<step>` directories of a Trainer run, oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"The run directory {run_dir} does not exist.")
    steps = {int(m.group(1)): p for p in run_dir.iterdir() if (m := re.fullmatch(r"checkpoint-(\d+)", p.name)) and p.is_dir()}
    if len(steps) < count:
        raise ValueError(
            f"{run_dir} has {len(steps)} checkpoint-* directories, fewer than the {count} to average. Save more "
            "often (--save_steps) and keep more (--save_total_limit), or average fewer."
        )
    return [steps[step] for step in sorted(steps)[-count:]]


def average_checkpoints(checkpoint_dirs: list[str | Path]) -> PreTrainedModel:
    """A model whose every parameter is the mean of that parameter over the checkpoints (computed in float32).
    The checkpoints must share one config; the first one's config and generation config are kept."""
    if not checkpoint_dirs:
        raise ValueError("Give at least one checkpoint to average.")
    for directory in checkpoint_dirs:
        if not (Path(directory) / "config.json").is_file():
            raise ValueError(f"{directory} is not a saved model (no config.json).")
    averaged = AutoModelForSeq2SeqLM.from_pretrained(checkpoint_dirs[0])
    sums = {name: parameter.detach().float().clone() for name, parameter in averaged.named_parameters()}
    for directory in checkpoint_dirs[1:]:
        model = AutoModelForSeq2SeqLM.from_pretrained(directory)
        if model.config.to_diff_dict() | {"_name_or_path": ""} != averaged.config.to_diff_dict() | {"_name_or_path": ""}:
            raise ValueError(f"{directory} has another config than {checkpoint_dirs[0]}: only checkpoints of one model can be averaged.")
        for name, parameter in model.named_parameters():
            sums[name] += parameter.detach().float()
    with torch.no_grad():
        for name, parameter in averaged.named_parameters():
            parameter.copy_(sums[name] / len(checkpoint_dirs))
    return averaged
