"""Which training checkpoints are complete: a run killed while it saved leaves a checkpoint folder with files
missing or cut short, and resuming from one would load garbage or fail half-way. Both training paths (the Trainer's
`checkpoint-<step>` folders, the Accelerate loop's `step_<step>` folders) resume from the last complete one."""

import json
import logging
import re
import zipfile
from pathlib import Path

from safetensors import safe_open

logger = logging.getLogger(__name__)

TRAINER_CHECKPOINT, ACCELERATE_CHECKPOINT = r"checkpoint-(\d+)", r"step_(\d+)"  # folder names, the step in each
# Besides the weights, what each kind of checkpoint needs to resume (the Trainer's and accelerate's file names)
TRAINER_STATE_FILES = ("trainer_state.json", "optimizer.pt", "scheduler.pt")
ACCELERATE_STATE_FILES = ("optimizer.bin", "scheduler.bin", "random_states_0.pkl")
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def checkpoint_problem(folder: str | Path, required: tuple[str, ...]) -> str | None:
    """What makes `folder` an incomplete checkpoint (a file missing or unreadable), or None when it is complete."""
    folder = Path(folder)
    missing = [name for name in required if not (folder / name).is_file()]
    if not any((folder / name).is_file() for name in WEIGHTS):
        missing.append("the model weights (model.safetensors)")
    if missing:
        return "missing " + ", ".join(missing)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (ValueError, KeyError):
            return f"{index.name} is not a weight index (cut short?)"
        if absent := sorted(shard for shard in shards if not (folder / shard).is_file()):
            return "missing " + ", ".join(absent)
    for file in sorted(folder.iterdir()):
        if file.is_file() and (problem := _unreadable(file)):
            return f"{file.name} {problem}"
    return None


def _unreadable(file: Path) -> str | None:
    """Why `file` cannot be read in the format its name says, or None. Each check reads only what a cut-short
    file lacks: the end of a zip archive (torch.save), the extent a safetensors header promises, a whole JSON."""
    try:
        if file.suffix == ".json":
            json.loads(file.read_text())
        elif file.suffix == ".safetensors":
            with safe_open(str(file), framework="pt") as weights:
                weights.keys()
        elif file.suffix in (".pt", ".pth", ".bin", ".pkl"):
            if not zipfile.is_zipfile(file):
                return "is not a complete torch.save archive (cut short?)"
    except Exception as error:  # each format's own error: what matters is that it does not load
        return f"does not load ({type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else 'cut short?'})"
    return None


def checkpoints_by_step(output_dir: str | Path, pattern: str) -> list[tuple[int, Path]]:
    """(step, folder) of the folders of `output_dir` named like `pattern` (a regex with one step group), last first."""
    found = []
    for folder in Path(output_dir).iterdir() if Path(output_dir).is_dir() else ():
        match = re.fullmatch(pattern, folder.name)
        if match and folder.is_dir():
            found.append((int(match.group(1)), folder))
    return sorted(found, reverse=True)


def last_complete_checkpoint(output_dir: str | Path, pattern: str, required: tuple[str, ...]) -> Path | None:
    """The complete checkpoint of the highest step; incomplete ones after it are skipped with a warning."""
    for _, folder in checkpoints_by_step(output_dir, pattern):
        problem = checkpoint_problem(folder, required)
        if problem is None:
            return folder
        logger.warning("Skipping the incomplete checkpoint %s: %s (a run killed while saving?).", folder, problem)
    return None


def require_complete(folder: str | Path, required: tuple[str, ...], flag: str = "--resume_from_checkpoint") -> None:
    """Refuses an incomplete checkpoint that was named explicitly."""
    problem = checkpoint_problem(folder, required)
    if problem is not None:
        raise ValueError(
            f"{flag} {folder} is an incomplete checkpoint: {problem} (a run killed while saving?). Resume from an "
            f"earlier checkpoint, or give `{flag} true` to take the last complete one."
        )
