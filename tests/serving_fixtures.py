"""A tiny translator trained inside the tests in seconds: it learns to write strings of digits backwards
("40213" -> "31204"), through a real tokenizer, so that every serving engine can be compared on text."""

import random
from pathlib import Path

import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
from vanilla_transformer.data.tokenization import train_bpe_tokenizer

from .conftest import tiny_config


def digit_strings(count: int, seed: int, shortest: int = 2, longest: int = 9) -> list[str]:
    generator = random.Random(seed)
    return ["".join(generator.choice("0123456789") for _ in range(generator.randint(shortest, longest))) for _ in range(count)]


def train_reverser(folder: Path, steps: int = 250, seed: int = 0, d_model: int = 64) -> Path:
    """Trains and saves (model + tokenizer) a 2+2-layer model that reverses digit strings; returns the folder."""
    tokenizer = train_bpe_tokenizer(digit_strings(500, seed=1), vocab_size=262)
    tokenizer.save_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    torch.manual_seed(seed)
    config = tiny_config(vocab_size=len(tokenizer), d_model=d_model, encoder_ffn_dim=2 * d_model, decoder_ffn_dim=2 * d_model, dropout=0.0)
    model = AutoModelForSeq2SeqLM.from_config(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, betas=(0.9, 0.98), eps=1e-9)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min((step + 1) / 30, (steps - step) / (steps - 30)))
    model.train()
    for step in range(steps):
        sources = digit_strings(48, seed=100 + step)
        batch = tokenizer(sources, text_target=[s[::-1] for s in sources], padding=True, return_tensors="pt")
        batch["labels"] = batch["labels"].masked_fill(batch["labels"] == tokenizer.pad_token_id, -100)
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    model.generation_config.max_length = 16
    model.save_pretrained(folder)
    return folder
