"""Tiny translation data and tokenizer for the training tests, made on the fly from the package's numbers task."""

from pathlib import Path

from vanilla_transformer.data.tokenization import train_bpe_tokenizer
from vanilla_transformer.data.toy_tasks import numbers_to_words_splits

SOURCE, TARGET = "digits", "words"
TINY_MODEL = (
    "d_model=32,encoder_layers=1,decoder_layers=1,encoder_attention_heads=2,decoder_attention_heads=2,"
    "encoder_ffn_dim=64,decoder_ffn_dim=64,max_position_embeddings=64"
)


def write_numbers_data(folder: Path, sizes=None) -> dict[str, Path]:
    """Parallel files <split>.digits / <split>.words in `folder`; returns each split's prefix."""
    splits = numbers_to_words_splits(sizes or {"train": 256, "val": 24, "test": 24}, seed=0)
    prefixes = {}
    for split, pairs in splits.items():
        prefixes[split] = folder / split
        for side, lang in enumerate((SOURCE, TARGET)):
            Path(f"{prefixes[split]}.{lang}").write_text("\n".join(pair[side] for pair in pairs) + "\n")
    return prefixes


def write_tokenizer(folder: Path, prefixes: dict[str, Path]) -> Path:
    texts = [line for lang in (SOURCE, TARGET) for line in Path(f"{prefixes['train']}.{lang}").read_text().splitlines()]
    train_bpe_tokenizer(texts, vocab_size=120).save_pretrained(folder)
    return folder
