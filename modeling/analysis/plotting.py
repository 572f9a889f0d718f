"""Pictures of a model: attention heatmaps labelled with the tokens, and the curves of a training run."""

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402

from .attention_maps import AttentionMaps  # noqa: E402

TITLES = {
    "encoder": "encoder self-attention",
    "decoder": "decoder masked self-attention",
    "cross": "cross-attention (decoder -> encoder)",
}


def head_grid(heads: int) -> tuple[int, int]:
    """Rows and columns of the per-head grid: as square as possible, e.g. 8 heads -> 2 x 4."""
    rows = int(math.sqrt(heads))
    while heads % rows:
        rows -= 1
    return rows, heads // rows


def _heatmap(axis, weights, row_tokens, column_tokens, title):
    axis.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    axis.set_xticks(range(len(column_tokens)), column_tokens, rotation=90, fontsize=7)
    axis.set_yticks(range(len(row_tokens)), row_tokens, fontsize=7)
    axis.set_title(title, fontsize=9)


def plot_attention_maps(maps: AttentionMaps, output_dir: str | Path) -> list[Path]:
    """Writes one grid of heads per layer and attention kind (`encoder_layer1.png`, `decoder_layer1.png`,
    `cross_layer1.png`, ...) and the alignment picture `cross_attention_average.png` (cross-attention averaged over
    all layers and heads). Rows are queries, columns keys; returns the files written."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    labels = {
        "encoder": (maps.source_tokens, maps.source_tokens),
        "decoder": (maps.target_tokens, ["<s>"] + maps.target_tokens[:-1]),
        "cross": (maps.target_tokens, maps.source_tokens),
    }
    written = []
    for kind, weights in (("encoder", maps.encoder), ("decoder", maps.decoder), ("cross", maps.cross)):
        layers, heads = weights.shape[:2]
        rows, columns = head_grid(heads)
        queries, keys = labels[kind]
        for layer in range(layers):
            size = max(2.0, 0.28 * max(len(queries), len(keys)))
            figure, axes = plt.subplots(rows, columns, figsize=(columns * size, rows * size), squeeze=False)
            for head in range(heads):
                _heatmap(axes[head // columns][head % columns], weights[layer, head], queries, keys, f"head {head + 1}")
            figure.suptitle(f"{TITLES[kind]}, layer {layer + 1}")
            figure.tight_layout()
            path = output_dir / f"{kind}_layer{layer + 1}.png"
            figure.savefig(path, dpi=80)
            plt.close(figure)
            written.append(path)
    size = max(3.0, 0.35 * max(len(maps.source_tokens), len(maps.target_tokens)))
    figure, axis = plt.subplots(figsize=(size, size))
    _heatmap(axis, maps.cross.mean(dim=(0, 1)), maps.target_tokens, maps.source_tokens, "cross-attention\n(mean of layers and heads)")
    axis.set_xlabel("source")
    axis.set_ylabel("translation")
    figure.tight_layout()
    path = output_dir / "cross_attention_average.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return written + [path]


def training_history(path: str | Path) -> list[dict]:
    """The logged records of a run: a Trainer's `trainer_state.json` (or its directory) or the Accelerate loop's
    `loss_history.json`."""
    path = Path(path)
    if path.is_dir():
        candidates = [path / "trainer_state.json", path / "loss_history.json"]
        path = next((candidate for candidate in candidates if candidate.is_file()), candidates[0])
    if not path.is_file():
        raise FileNotFoundError(f"No training log at {path}: give a run directory, trainer_state.json or loss_history.json.")
    data = json.loads(path.read_text())
    return data["log_history"] if isinstance(data, dict) else data


def plot_training_curves(path: str | Path, output: str | Path) -> Path:
    """Training loss (and evaluation loss), learning rate and BLEU (when evaluated) against the step, as one PNG."""
    history = training_history(path)
    panels = [
        ("loss", [("loss", "training"), ("eval_loss", "evaluation")]),
        ("learning rate", [("learning_rate", None)]),
        ("BLEU", [("eval_bleu", "evaluation")]),
    ]
    panels = [(title, series) for title, series in panels if any(key in record for key, _ in series for record in history)]
    if not panels:
        raise ValueError(f"{path} logs no loss, learning rate or BLEU to plot.")
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    for axis, (title, series) in zip(axes[0], panels):
        for key, label in series:
            points = [(record["step"], record[key]) for record in history if key in record and "step" in record]
            if points:
                axis.plot(*zip(*points), marker="." if len(points) < 30 else None, label=label)
        axis.set_title(title)
        axis.set_xlabel("step")
        if any(label for _, label in series):
            axis.legend(fontsize=8)
    figure.tight_layout()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=100)
    plt.close(figure)
    return output
