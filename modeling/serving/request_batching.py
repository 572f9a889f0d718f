"""Batching across requests: the sentences of concurrent requests are translated together, as `translate()` batches
the lines of one file (sorted by length, cut into batches of a token budget), and each request is answered as soon
as its own sentences are done.

A worker thread works in waves: it takes every request queued so far, translates their sentences batch by batch,
and meanwhile new requests queue for the next wave. There are as many workers as the engine translates batches at
once (`parallel_batches`): while one translates its wave, the next takes the requests that came in meanwhile.

With a float engine (PyTorch, CTranslate2 float32, ONNX Runtime) a batch's translations equal those of its sentences
translated alone (`translate()`'s guarantee, tested), so a request gets what `translate()` gives for its sentences,
whoever it shared batches with. CTranslate2's int8 kernels round a sentence differently with its padding, so there a
request's answer can differ from `translate()`'s when it shares a batch with longer sentences (0.5% of answers in
the load test). The queue is bounded: a full queue refuses new work at once instead of growing memory without end.
"""

import concurrent.futures
import logging
import threading
from collections import deque
from dataclasses import astuple, dataclass, field
from itertools import count

from .engines import DecodingOptions
from .translation import TranslationError, first_line, translate_in_batches

logger = logging.getLogger(__name__)


class QueueFull(RuntimeError):
    """More sentences are waiting than the server takes; the client should retry later."""


class ServerClosing(RuntimeError):
    """The server is shutting down and takes no new work."""


class TranslationFailed(RuntimeError):
    """A sentence of a request failed in the engine even alone; the other requests are unaffected."""


@dataclass(eq=False)
class Job:
    """One request's sentences, its decoding options and the future its handler awaits."""

    sentences: list[str]
    options: DecodingOptions
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    results: list = field(default_factory=list)
    remaining: int = 0

    def __post_init__(self):
        self.results = [None] * len(self.sentences)
        self.remaining = len(self.sentences)


class RequestBatcher:
    """Queues requests' sentences and translates them together, in waves, on `engine.parallel_batches` threads (see
    the module's docstring).

    `on_batch(outputs)` is called after each batch of a wave with the batch's results, in no particular order: a
    translation, or the `TranslationError` of a sentence that failed (for metrics)."""

    def __init__(self, engine, tokenizer, max_queued_sentences: int = 4096, batch_size: int = 64,
                 max_tokens_per_batch: int = 2048, max_source_length: int | None = None, on_batch=None):
        self.engine, self.tokenizer = engine, tokenizer
        self.max_queued_sentences = max_queued_sentences
        self.batch_size, self.max_tokens_per_batch = batch_size, max_tokens_per_batch
        self.limit = min(max_source_length or engine.max_source_length, engine.max_source_length)
        self.on_batch = on_batch
        self.queued_sentences = 0  # waiting or being translated
        self._jobs: deque[Job] = deque()
        self._condition = threading.Condition()
        self._closing = False
        self._threads = [
            threading.Thread(target=self._work, name=f"translation-batcher-{number}", daemon=True)
            for number in range(getattr(engine, "parallel_batches", 1))
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, sentences: list[str], options: DecodingOptions) -> concurrent.futures.Future:
        """A future of the translations of `sentences`, in order; raises QueueFull or ServerClosing at once."""
        job = Job(sentences, options)
        if not sentences:
            job.future.set_result([])
            return job.future
        with self._condition:
            if self._closing:
                raise ServerClosing("The server is shutting down.")
            if self.queued_sentences + len(sentences) > self.max_queued_sentences:
                raise QueueFull(f"{self.queued_sentences} sentences are waiting (the limit is {self.max_queued_sentences}).")
            self.queued_sentences += len(sentences)
            self._jobs.append(job)
            self._condition.notify()
        return job.future

    def close(self) -> None:
        """Takes no new work, finishes every queued request, then stops the threads."""
        with self._condition:
            self._closing = True
            self._condition.notify_all()
        for thread in self._threads:
            thread.join()

    def _work(self) -> None:
        while True:
            with self._condition:
                while not self._jobs and not self._closing:
                    self._condition.wait()
                if not self._jobs:
                    return
                wave = list(self._jobs)
                self._jobs.clear()
            # A request whose client left before its wave started costs nothing more
            started = [job for job in wave if job.future.set_running_or_notify_cancel()]
            for job in wave:
                if job not in started:
                    self._release(job)
            try:
                self._translate_wave(started)
            except Exception as error:  # a fault outside any one sentence: this wave's requests fail, the thread lives
                logger.exception("a wave of %d requests failed", len(started))
                for job in started:
                    if not job.future.done():
                        self._release(job)
                        job.future.set_exception(error)

    def _translate_wave(self, jobs: list[Job]) -> None:
        by_options: dict[tuple, list[Job]] = {}
        for job in jobs:
            by_options.setdefault(astuple(job.options), []).append(job)
        for group in by_options.values():
            options = group[0].options
            keys, owners = count(), {}
            items = []
            for job in group:
                for index, sentence in enumerate(job.sentences):
                    key = next(keys)
                    owners[key] = (job, index)
                    items.append((key, sentence))
            batches = translate_in_batches(
                self.engine, self.tokenizer, items, options, self.limit, self.batch_size, self.max_tokens_per_batch
            )
            for done in batches:
                if self.on_batch is not None:
                    self.on_batch(list(done.values()))
                for key, result in done.items():
                    job, index = owners[key]
                    job.results[index] = result
                    job.remaining -= 1
                    if job.remaining == 0:
                        self._finish(job)

    def _finish(self, job: Job) -> None:
        self._release(job)
        failures = [(index, result) for index, result in enumerate(job.results) if isinstance(result, TranslationError)]
        if failures:
            index, error = failures[0]
            cause = error.__cause__ or error
            job.future.set_exception(TranslationFailed(
                f"sentence {index + 1} of the request failed in the engine: {type(cause).__name__}: {first_line(cause)}"
            ))
        elif not job.future.done():
            job.future.set_result(job.results)

    def _release(self, job: Job) -> None:
        with self._condition:
            self.queued_sentences -= len(job.sentences)
