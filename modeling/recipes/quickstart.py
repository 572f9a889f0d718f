"""The quick start: from nothing to a trained, saved, reloaded translator in one call.

With no data it makes its own task (numbers written as digits -> English words, "40021" -> "forty thousand
twenty-one"); given a folder of parallel text (such as Multi30k) it trains a real translator. Either way it trains a
joint BPE tokenizer, trains a small Transformer with the Seq2SeqTrainer, reloads both through `AutoTokenizer` /
`AutoModelForSeq2SeqLM`, translates the validation set and every test set and reports BLEU, chrF and exact match.
"""

import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, Seq2SeqTrainingArguments

from ..configuration_vanilla_transformer import VanillaTransformerConfig
from ..data.tokenization import train_bpe_tokenizer
from ..data.toy_tasks import numbers_to_words_splits
from ..data.translation_data import parallel_file, read_lines
from ..serving.translation import translate
from ..training.checkpoint_averaging import average_checkpoints, last_checkpoints
from ..training.evaluation import load_translation_metric
from ..training.step_timing import setup_name, time_training_setups
from ..training.trainer import DataTrainingArguments, ModelArguments, run_translation


@dataclass
class Recipe:
    """What to train: the model's size, the tokenizer's and the training's."""

    vocab_size: int
    config_overrides: str
    max_steps: int
    max_tokens_per_batch: int
    learning_rate: float
    warmup_steps: int
    num_beams: int
    max_length: int  # of sources, targets and translations, in tokens
    length_penalty: float = 0.6  # the paper's alpha, for beam search
    average_last: int = 1  # checkpoints averaged into the final model (the paper's 5; 1: the last model as it is)
    save_steps: int = 500  # steps between those checkpoints
    label_smoothing: float = 0.1  # the paper's epsilon_ls
    # Train in fp32 with sdpa attention, or in the fastest here of fp32 / bf16 mixed precision x sdpa / eager attention
    fastest_setup: bool = False


# Sized to reach >= 95% exact match in a few minutes on 2 CPU cores
NUMBERS_RECIPE = Recipe(
    vocab_size=200,
    config_overrides=(
        "d_model=128,encoder_layers=2,decoder_layers=2,encoder_attention_heads=4,decoder_attention_heads=4,"
        "encoder_ffn_dim=512,decoder_ffn_dim=512,dropout=0.1,max_position_embeddings=64"
    ),
    max_steps=1200,
    max_tokens_per_batch=1536,
    learning_rate=1e-3,
    warmup_steps=100,
    num_beams=1,
    max_length=64,
)

# A small Transformer for Multi30k-sized corpora (29k pairs): the paper's base model at half its width and depth.
# Sized to an hour on 2 CPU cores, tokenizer to scores; batch size, steps and averaging chosen on val (README table).
# Small batches: at a fixed hour, 1024-token batches (4x the updates of 4096-token ones) train far further.
PARALLEL_TEXT_MODEL = (
    "d_model=256,encoder_layers=3,decoder_layers=3,encoder_attention_heads=4,decoder_attention_heads=4,"
    "encoder_ffn_dim=1024,decoder_ffn_dim=1024,max_position_embeddings=256"
)
PARALLEL_TEXT_RECIPE = Recipe(  # any language pair; en->de's val keeps the paper's dropout 0.1 (0.05: -0.8 BLEU)
    vocab_size=8000,
    config_overrides=PARALLEL_TEXT_MODEL + ",dropout=0.1",
    # 12.6 epochs of Multi30k. Where bf16 products are fast (an AMD EPYC with AVX512-BF16: 200 steps in 48 s vs 80 s in
    # fp32) they bought these 6000 steps instead of 3600: val +1.2 BLEU en->de, +0.1 de->en (README table)
    max_steps=6000,
    max_tokens_per_batch=1024,
    learning_rate=1e-3,
    warmup_steps=300,
    # val, 4 / 5 / 6 beams x length penalty 0.6 / 0.8 / 1.0 / 1.2: 5 and 1.0 best in both directions (+0.4 / +0.6 BLEU
    # over the paper's 4 and 0.6)
    num_beams=5,
    length_penalty=1.0,
    max_length=128,
    average_last=10,  # val: ahead of the last 5 (every 200 or 400 steps) summed over both directions
    save_steps=200,
    fastest_setup=True,
)
# Where a direction's own val chose otherwise. de->en: dropout 0.0 / 0.05 / 0.1 / 0.2 gave 39.7 / 41.2 / 40.3 / 37.9
# BLEU; an hour is too short for more regularization to pay, yet none at all lets the model overfit.
# en->de: label smoothing 0.2 gave 39.8 against 0.1's 39.2 (measured on another machine), where more dropout did not
# pay (0.15: 38.9).
PAIR_RECIPES = {
    ("de", "en"): replace(PARALLEL_TEXT_RECIPE, config_overrides=PARALLEL_TEXT_MODEL + ",dropout=0.05"),
    ("en", "de"): replace(PARALLEL_TEXT_RECIPE, label_smoothing=0.2),
}

SPLIT_NAMES = {"train": ("train",), "validation": ("val", "valid", "validation", "dev")}


def prefixes_named(data_dir: Path, name: str, lang: str) -> list[Path]:
    """The prefixes of the files `{name}*.{lang}` or `{name}*.{lang}.gz` in `data_dir`, sorted."""
    matches = (p for p in data_dir.glob(f"{name}*.{lang}*") if p.name.split(f".{lang}")[-1] in ("", ".gz"))
    return sorted({Path(str(p).removesuffix(".gz").removesuffix(f".{lang}")) for p in matches})


def find_split(data_dir: Path, split: str, lang: str) -> Path:
    """The prefix of a split's parallel files in `data_dir`: `train.de(.gz)`, `val.de`, `test_2016_flickr.de.gz`..."""
    for name in SPLIT_NAMES[split]:
        if prefixes := prefixes_named(data_dir, name, lang):
            return prefixes[0]
    raise FileNotFoundError(
        f"No {split} files for {lang!r} in {data_dir}: expected a file named like {SPLIT_NAMES[split][0]}*.{lang} "
        f"or {SPLIT_NAMES[split][0]}*.{lang}.gz."
    )


def find_test_sets(data_dir: Path, source_lang: str, target_lang: str) -> list[Path]:
    """Every test set of `data_dir` (`test*`) that has both sides, such as test_2016_flickr and test_2017_flickr."""
    with_target = set(prefixes_named(data_dir, "test", target_lang))
    prefixes = [p for p in prefixes_named(data_dir, "test", source_lang) if p in with_target]
    if not prefixes:
        raise FileNotFoundError(
            f"No test set with both sides in {data_dir}: expected files named like test*.{source_lang} and "
            f"test*.{target_lang} (or .gz)."
        )
    return prefixes


def write_numbers_task(data_dir: Path) -> dict[str, Path]:
    splits = numbers_to_words_splits({"train": 30000, "validation": 500, "test": 1000}, seed=0)
    prefixes = {}
    for split, pairs in splits.items():
        prefixes[split] = data_dir / split
        for side, lang in enumerate(("digits", "words")):
            Path(f"{prefixes[split]}.{lang}").write_text("\n".join(pair[side] for pair in pairs) + "\n")
    return prefixes


def run_quickstart(
    output_dir: str,
    data_dir: str | None = None,
    source_lang: str = "de",
    target_lang: str = "en",
    max_steps: int | None = None,
    seed: int = 0,
    show_examples: int = 5,
    recipe: Recipe | None = None,
) -> dict[str, dict[str, float]]:
    """Trains and evaluates as described above; prints progress and a few translations; returns BLEU, chrF and
    exact match (in %) of the validation set and of each test set, by the sets' names (e.g. "val",
    "test_2016_flickr"). `recipe` replaces the task's own: NUMBERS_RECIPE, or with data the pair's in PAIR_RECIPES
    (else PARALLEL_TEXT_RECIPE)."""
    started, output = time.monotonic(), Path(output_dir)
    with tempfile.TemporaryDirectory() as scratch:
        if data_dir is None:
            recipe, source_lang, target_lang = recipe or NUMBERS_RECIPE, "digits", "words"
            prefixes = write_numbers_task(Path(scratch))
            prefixes["tests"] = [prefixes.pop("test")]
        else:
            recipe = recipe or PAIR_RECIPES.get((source_lang, target_lang), PARALLEL_TEXT_RECIPE)
            folder = Path(data_dir)
            if not folder.is_dir():
                raise FileNotFoundError(f"The data folder {data_dir} does not exist.")
            prefixes = {split: find_split(folder, split, source_lang) for split in ("train", "validation")}
            prefixes["tests"] = find_test_sets(folder, source_lang, target_lang)
            for prefix in (prefixes["train"], prefixes["validation"]):
                parallel_file(prefix, target_lang)  # fails now, not after training, if a side is missing

        if recipe.average_last > 1 and (earlier := sorted(output.glob("checkpoint-*"))):
            raise FileExistsError(
                f"{output} holds checkpoints of an earlier run ({', '.join(p.name for p in earlier)}): averaging would "
                "mix them into this run's model. Remove them, or give another --output_dir."
            )
        train_texts = [line for lang in (source_lang, target_lang) for line in read_lines(parallel_file(prefixes["train"], lang))]
        tokenizer = train_bpe_tokenizer(train_texts, vocab_size=recipe.vocab_size)
        tokenizer_dir = Path(scratch) / "tokenizer"
        tokenizer.save_pretrained(tokenizer_dir)
        print(f"tokenizer: {len(tokenizer)} tokens learned from {len(train_texts)} {source_lang}+{target_lang} sentences")

        bf16, attention = False, "sdpa"
        if recipe.fastest_setup:
            config = VanillaTransformerConfig(vocab_size=len(tokenizer))
            config.update_from_string(recipe.config_overrides)
            step_seconds = time_training_setups(config, recipe.max_tokens_per_batch)
            bf16, attention = min(step_seconds, key=step_seconds.get)
            print(
                f"training in {'bf16 mixed precision' if bf16 else 'fp32'} with {attention} attention, the fastest here "
                f"(a step: {', '.join(f'{setup_name(*setup)} {1000 * t:.0f} ms' for setup, t in step_seconds.items())})"
            )
        run_translation(
            ModelArguments(
                tokenizer_name=str(tokenizer_dir),
                config_overrides=recipe.config_overrides,
                attn_implementation=attention,
            ),
            DataTrainingArguments(
                source_lang=source_lang,
                target_lang=target_lang,
                train_file=str(prefixes["train"]),
                validation_file=str(prefixes["validation"]),
                max_tokens_per_batch=recipe.max_tokens_per_batch,
                max_source_length=recipe.max_length,
                max_target_length=recipe.max_length,
                num_beams=recipe.num_beams,
                length_penalty=recipe.length_penalty if recipe.num_beams > 1 else None,
                overwrite_output_dir=True,
            ),
            Seq2SeqTrainingArguments(
                output_dir=str(output),
                do_train=True,
                max_steps=max_steps or recipe.max_steps,
                learning_rate=recipe.learning_rate,
                lr_scheduler_type="linear",
                warmup_steps=recipe.warmup_steps,
                adam_beta2=0.98,
                adam_epsilon=1e-9,
                label_smoothing_factor=recipe.label_smoothing,
                # Only the checkpoints to average are kept, without optimizer states: they are read once, at the end
                save_strategy="steps" if recipe.average_last > 1 else "no",
                save_steps=recipe.save_steps,
                save_total_limit=recipe.average_last,
                save_only_model=True,
                logging_steps=100,
                report_to="none",
                seed=seed,
                bf16=bf16,
                use_cpu=bf16 and not torch.cuda.is_available(),  # the Trainer asks for it to run bf16 on a CPU
            ),
        )

        if recipe.average_last > 1:
            average_last_checkpoints(output, recipe.average_last)
        model = AutoModelForSeq2SeqLM.from_pretrained(output).eval()
        tokenizer = AutoTokenizer.from_pretrained(output)
        print(f"reloaded {type(model).__name__} ({model.num_parameters():,} parameters) and its tokenizer from {output}/")
        evaluation_sets = [("validation", prefixes["validation"]), *(("test", prefix) for prefix in prefixes["tests"])]
        texts = [
            (role, prefix.name, read_lines(parallel_file(prefix, source_lang)), read_lines(parallel_file(prefix, target_lang)))
            for role, prefix in evaluation_sets
        ]

    metric, results = load_translation_metric(), {}
    first_test = prefixes["tests"][0].name
    for role, name, sources, references in texts:
        hypotheses = list(translate(model, tokenizer, sources, batch_size=64))
        if name == first_test:
            for source, hypothesis, reference in list(zip(sources, hypotheses, references))[:show_examples]:
                print(f"  {source}\n    -> {hypothesis}" + ("" if hypothesis == reference else f"\n    (reference: {reference})"))
        scores = metric.compute(predictions=hypotheses, references=[[r] for r in references])
        exact = 100 * sum(h == r for h, r in zip(hypotheses, references)) / len(references)
        print(f"{role} set {name}: {len(references)} sentences, BLEU {scores['bleu']:.1f}, chrF {scores['chrf']:.1f}")
        results[name] = {"bleu": scores["bleu"], "chrf": scores["chrf"], "exact_match": exact}
    # The recipes are sized by this figure (an hour on 2 CPU cores for a folder of data), so every run reports it
    print(f"wall time: {(time.monotonic() - started) / 60:.1f} min, tokenizer to scores")
    print(f"exact-match on {first_test}: {results[first_test]['exact_match']:.1f}%")
    return results


def average_last_checkpoints(run_dir: Path, count: int) -> None:
    """Replaces the run's final model by the average of its last `count` checkpoints (fewer if a shorter run saved
    fewer), as the paper does; the checkpoints stay beside it."""
    saved = len(list(run_dir.glob("checkpoint-*")))
    if saved < 2:
        print(f"checkpoint averaging skipped: the run saved {saved} checkpoint(s)")
        return
    checkpoints = last_checkpoints(run_dir, min(count, saved))
    average_checkpoints(checkpoints).save_pretrained(run_dir)
    print(f"averaged the weights of {', '.join(c.name for c in checkpoints)} into {run_dir}/")
