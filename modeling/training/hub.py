"""Sharing on the Hugging Face Hub: the model card, and pushing a saved model directory as one commit.

A pushed repo holds config.json (with `auto_map`), model.safetensors, generation_config.json, the tokenizer, the
model's code (configuration_vanilla_transformer.py, modeling_vanilla_transformer.py) and README.md, so that
`AutoModelForSeq2SeqLM.from_pretrained(repo, trust_remote_code=True)` works where only `transformers` is installed.
"""

import json
import tempfile
from pathlib import Path

import transformers
from huggingface_hub import CommitInfo, HfApi, ModelCard, ModelCardData
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, PreTrainedModel

USAGE = """## Use

With only `transformers` (>= {transformers_version}) and `torch` installed, the model's own code comes from this repo:

```python
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

# Both read config.json, which names the model's code in this repo: trust it once for each
tokenizer = AutoTokenizer.from_pretrained("{repo_id}", trust_remote_code=True)
model = AutoModelForSeq2SeqLM.from_pretrained("{repo_id}", trust_remote_code=True)
inputs = tokenizer([{example!r}], return_tensors="pt")
print(tokenizer.batch_decode(model.generate(**inputs), skip_special_tokens=True))
```

With [vanilla-transformer](https://github.com/vanilla-transformer/vanilla-transformer) installed, `import
vanilla_transformer` first and the installed classes are used, with or without `trust_remote_code`.
"""


def model_card(
    repo_id: str,
    model: PreTrainedModel,
    languages: list[str] | None = None,
    datasets: list[str] | None = None,
    metrics: dict[str, float] | None = None,
    example: str = "Ein Mann fährt Fahrrad.",
    base_model: str | None = None,
) -> ModelCard:
    """A card with the Hub metadata (library, license, tags, pipeline, languages, datasets, metrics and their values)
    and a usage snippet that runs as written."""
    config = model.config
    scores = {name: value for name, value in (metrics or {}).items() if name in ("bleu", "chrf")}
    data = ModelCardData(
        library_name="transformers",
        license="apache-2.0",
        tags=["vanilla-transformer", "translation", "custom_code"],
        pipeline_tag="translation",
        language=languages or None,
        datasets=datasets or None,
        metrics=sorted(scores) or None,
        base_model=base_model,
    )
    size = (
        f"d_model {config.d_model}, {config.encoder_layers} + {config.decoder_layers} layers, "
        f"{config.encoder_attention_heads} heads, FFN {config.encoder_ffn_dim}, vocabulary {config.vocab_size}, "
        f"{model.num_parameters():,} parameters"
    )
    lines = [
        f"# {repo_id.split('/')[-1]}",
        "",
        'An encoder-decoder Transformer ("Attention Is All You Need", Vaswani et al., 2017) trained with '
        f"vanilla-transformer: {size}.",
        "",
    ]
    if scores:
        lines += ["## Results", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {name} | {value:.2f} |" for name, value in sorted(scores.items())] + [""]
    lines.append(USAGE.format(repo_id=repo_id, example=example, transformers_version=_minimum_transformers()))
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))


def _minimum_transformers() -> str:
    major, minor = transformers.__version__.split(".")[:2]
    return f"{major}.{minor}"


def read_metrics(model_dir: Path) -> dict[str, float]:
    """The last BLEU / chrF a Trainer run recorded in `all_results.json`, without their eval_/predict_ prefix."""
    path = model_dir / "all_results.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    metrics = {}
    for prefix in ("eval_", "predict_"):  # test scores, when present, win
        metrics.update({k.removeprefix(prefix): v for k, v in results.items() if k.startswith(prefix)})
    return metrics


def push_model_directory(
    model_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    languages: list[str] | None = None,
    datasets: list[str] | None = None,
    example: str = "Ein Mann fährt Fahrrad.",
) -> CommitInfo:
    """Pushes a saved model directory (model, tokenizer, and its card or a new one) to `repo_id` as one commit,
    on branch `revision` (created if needed). Nothing is uploaded unless the directory loads as a model with a
    tokenizer. Returns the commit, whose `oid` pins this exact version (`from_pretrained(..., revision=oid)`)."""
    model_dir = Path(model_dir)
    try:
        model = AutoModelForSeq2SeqLM.from_pretrained(model_dir)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"{model_dir} does not load as a model with its tokenizer ({error}). Push a directory written by "
            "save_pretrained (e.g. a training run's --output_dir) that also holds the tokenizer."
        ) from None
    with tempfile.TemporaryDirectory() as staging:
        # Saved again, so that the weights, the code files and auto_map are those this package writes today
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        card_path = model_dir / "README.md"
        if card_path.is_file():
            Path(staging, "README.md").write_text(card_path.read_text(encoding="utf-8"), encoding="utf-8")
        else:
            card = model_card(repo_id, model, languages, datasets, read_metrics(model_dir), example=example)
            card.save(Path(staging, "README.md"))
        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision is not None and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=staging,
            revision=revision,
            commit_message=commit_message or f"Upload {model_dir.name} with vanilla-transformer",
        )
