"""Translating text with a trained model: batched, in input order, one result at a time as batches finish."""

from collections.abc import Iterable, Iterator

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


def translate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sentences: Iterable[str],
    batch_size: int = 32,
    max_source_length: int | None = None,
    **generate_kwargs,
) -> Iterator[str]:
    """Yields the translation of each sentence, in order, as soon as its batch is decoded (sentences may be a
    stream, e.g. stdin). `generate_kwargs` (num_beams, length_penalty, max_new_tokens, ...) go to `generate()`;
    the model's generation config gives the rest."""
    batch = []
    for sentence in sentences:
        batch.append(sentence)
        if len(batch) == batch_size:
            yield from _translate_batch(model, tokenizer, batch, max_source_length, generate_kwargs)
            batch = []
    if batch:
        yield from _translate_batch(model, tokenizer, batch, max_source_length, generate_kwargs)


def _translate_batch(model, tokenizer, batch, max_source_length, generate_kwargs) -> list[str]:
    inputs = tokenizer(
        batch, return_tensors="pt", padding=True, truncation=max_source_length is not None, max_length=max_source_length
    ).to(model.device)
    with torch.no_grad():
        outputs = model.generate(**inputs, **generate_kwargs)
    return [text.strip() for text in tokenizer.batch_decode(outputs, skip_special_tokens=True)]
