"""Translating text with a trained model, whatever engine runs it: sentences sorted by length into batches of a token
budget, results in input order, and one result for every input line, whatever the line holds.

The engines (`serving.engines`: PyTorch's `generate()`, CTranslate2, ONNX Runtime) take token ids and
return token ids; everything around them (tokenizing, truncating, batching, ordering, decoding) is done here, once,
so that every engine sees the same inputs and its outputs read the same.
"""

import logging
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed

import numpy as np
from transformers import PreTrainedTokenizerBase

from ..data.translation_data import token_budget_batch_sizes
from .engines import DecodingOptions, as_engine

logger = logging.getLogger(__name__)


class TranslationError(RuntimeError):
    """A sentence that its engine could not translate even alone; `line` is its 1-based number in the input."""

    def __init__(self, line: int, cause: BaseException):
        super().__init__(f"line {line}: the translation failed: {type(cause).__name__}: {first_line(cause)}")
        self.line = line
        self.__cause__ = cause


def first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [""])[0]


def translate(
    model,
    tokenizer: PreTrainedTokenizerBase,
    sentences: Iterable[str],
    batch_size: int = 64,
    max_tokens_per_batch: int = 2048,
    max_source_length: int | None = None,
    sort_window: int | None = 2048,
    on_failure: Callable[["TranslationError"], str] | None = None,
    **decoding,
) -> Iterator[str]:
    """Yields the translation of each sentence, in input order: one string per sentence, always.

    `model` is a `generate()`-capable model (a loaded `VanillaTransformerForConditionalGeneration`) or an engine of
    `serving.engines`. Up to `sort_window` sentences are read ahead (None: all of them), sorted by length
    and cut into batches of at most `batch_size` sentences and `max_tokens_per_batch` source tokens, padding
    included, so that little is computed for padding; `sort_window=1` translates each sentence as soon as it is
    read (a person typing). A batch's translations equal those of its sentences translated alone (tested).

    An empty sentence translates to an empty string without a model call. A sentence longer than
    `max_source_length` tokens (default: the model's positions) is cut to that length, with a warning naming its
    line. If a batch fails, its sentences are translated one by one; a sentence that fails alone raises
    `TranslationError` after every earlier sentence was yielded, or yields what `on_failure(error)` returns.
    If reading `sentences` fails (say, invalid UTF-8 on stdin), what was read is translated and yielded first.
    `decoding` (num_beams, length_penalty, max_length, max_new_tokens) overrides the model's generation config.
    """
    engine = as_engine(model)
    options = engine.decoding_options(**decoding)
    limit = min(max_source_length or engine.max_source_length, engine.max_source_length)
    numbered = enumerate(sentences, start=1)
    while True:
        window, failure, finished = [], None, True
        try:
            for item in numbered:
                window.append(item)
                if len(window) == sort_window:
                    finished = False
                    break
        except Exception as error:  # the lines read before it still get their translations
            failure = error
        results = _translate_window(engine, tokenizer, window, options, limit, batch_size, max_tokens_per_batch)
        for line, _ in window:
            result = results[line]
            if isinstance(result, TranslationError):
                if on_failure is None:
                    raise result
                result = on_failure(result)
            yield result
        if failure is not None:
            raise failure
        if finished:
            return


def _translate_window(engine, tokenizer, window, options, limit, batch_size, max_tokens) -> dict:
    """{line: translation, or the TranslationError of a sentence that failed alone} for the (line, sentence) pairs
    of `window`."""
    results = {}
    parallel_batches = getattr(engine, "parallel_batches", 1)
    for done in translate_in_batches(engine, tokenizer, window, options, limit, batch_size, max_tokens, parallel_batches):
        results.update(done)
    return results


def translate_in_batches(engine, tokenizer, items, options: DecodingOptions, limit: int, batch_size: int,
                         max_tokens: int, parallel_batches: int = 1) -> Iterator[dict]:
    """For (key, sentence) pairs (`key` an int: a line number), yields {key: translation, or TranslationError} batch by
    batch as each is done (empty sentences first, without the model), so that a caller can hand results out early.
    With `parallel_batches` > 1, that many batches are in the engine at once, each on its own thread."""
    empty, texts, pending = {}, [], []  # pending: (key, token ids) of the sentences that need the model
    for key, sentence in items:
        if sentence.strip():
            texts.append((key, sentence))
        else:
            empty[key] = ""
    # One call for them all: the tokenizer's batch encoding, rather than a Python round trip per sentence
    encoded = tokenizer([sentence for _, sentence in texts])["input_ids"] if texts else []
    for (key, _), ids in zip(texts, encoded):
        if len(ids) > limit:
            logger.warning(
                "line %d: %d tokens, cut to the first %d (the longest source the model takes; set "
                "max_source_length / --max_source_length to choose)", key, len(ids), limit,
            )
            ids = ids[: limit - 1] + ids[-1:]  # keeps the closing </s>
        pending.append((key, ids))
    if empty:
        yield empty
    pending.sort(key=lambda item: len(item[1]))
    sizes = token_budget_batch_sizes(np.array([len(ids) for _, ids in pending]), max_tokens, batch_size)
    ends = np.cumsum(sizes)
    # The longest first: with batches in parallel, no long batch is left to run alone at the end
    batches = [pending[end - size : end] for size, end in zip(sizes.tolist(), ends.tolist())][::-1]
    if parallel_batches == 1 or len(batches) == 1:  # a single batch (a line typed, a request) needs no pool
        for batch in batches:
            yield _decoded(tokenizer, _translate_batch(engine, batch, options))
        return
    pool = ThreadPoolExecutor(parallel_batches, thread_name_prefix="translation-batch")
    try:
        futures = [pool.submit(_translate_batch, engine, batch, options) for batch in batches]
        for future in as_completed(futures):
            yield _decoded(tokenizer, future.result())
    finally:  # a caller that stops reading leaves no batch to start
        pool.shutdown(cancel_futures=True)


def _decoded(tokenizer, outputs: list) -> dict:
    """{key: text} from [(key, output ids or TranslationError)]."""
    return {
        key: output if isinstance(output, TranslationError) else tokenizer.decode(output, skip_special_tokens=True).strip()
        for key, output in outputs
    }


def _translate_batch(engine, batch: list, options: DecodingOptions) -> list:
    """[(line, output ids or TranslationError)]: a failing batch is retried sentence by sentence, so that one bad
    sentence costs only itself."""
    try:
        return list(zip((line for line, _ in batch), engine.translate_ids([ids for _, ids in batch], options)))
    except Exception as error:
        if len(batch) == 1:
            return [(batch[0][0], TranslationError(batch[0][0], error))]
        logger.warning("a batch of %d sentences failed (%s); translating them one by one", len(batch), first_line(error))
        return [result for item in batch for result in _translate_batch(engine, [item], options)]
