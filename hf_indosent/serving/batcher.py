"""Dynamic batching: the texts of concurrent requests share model calls, and each request gets its own rows back.

Requests arrive already tokenized (their token counts); one inference thread takes the oldest request, lets later
ones join until their tokens reach ``max_call_tokens`` (``PASSES_PER_CALL`` forward passes' worth) or ``max_wait_s``
has passed since it started collecting, and runs the lot: sorted by length and cut into forward passes of at most
``max_batch_tokens`` padded tokens, exactly as the Predictor cuts what ``predict`` gives it, each pass one call of the
Predictor. A request is answered as soon as its last text's pass is done. While the model runs, new requests queue,
so under load every call is full without anyone waiting; when idle, a lone request waits at most ``max_wait_s``.

Requests that ask for another view of the model (raw scores, left truncation) share the collection but run in their
own passes. A pass that raises fails only the requests with a text in it (424, TEI's ``Backend``); the thread goes
on with the next. A request whose client went away before its call started is skipped.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from hf_indosent.modeling.folders import short_reason
from hf_indosent.serving.protocol import RequestError

logger = logging.getLogger(__name__)

Rows = list[dict[str, Any]]
RunModel = Callable[[Hashable, list[str]], Rows]
"""``(view key, texts) -> one row per text``: the Predictor view's call."""
ObserveBatch = Callable[[int, int, float], None]
"""``(texts, tokens, seconds)`` of each forward pass, for the metrics."""
PASSES_PER_CALL = 16
"""A call collects up to this many forward passes' worth of tokens (``max_batch_tokens`` each): sorting more texts by
length wastes less on padding (MiniLM-L6, 2 cores: 128 texts per call ran 1.7x as many texts a second as 16), and
answering pass by pass keeps short texts from waiting for the call's long ones."""
DEFAULT_PASS_TEXTS = 256
"""The most texts of one forward pass, as the Predictor's ``batch_size`` default."""


@dataclass
class Job:
    """One request's texts on their way through the batcher; ``future`` gets its rows, in its order."""

    texts: list[str]
    lengths: list[int]
    key: Hashable
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.perf_counter)
    queue_s: float = 0.0
    inference_s: float = 0.0

    @property
    def tokens(self) -> int:
        return sum(self.lengths)


class Batcher:
    """Collects :class:`Job` s into model calls on one inference thread (see the module docstring)."""

    def __init__(
        self,
        run_model: RunModel,
        *,
        max_batch_tokens: int,
        max_wait_s: float,
        max_call_tokens: int | None = None,
        max_pass_texts: int = DEFAULT_PASS_TEXTS,
        observe_batch: ObserveBatch | None = None,
    ) -> None:
        self.run_model = run_model
        self.max_pass_tokens = max_batch_tokens
        self.max_pass_texts = max_pass_texts
        self.max_call_tokens = max_call_tokens or max_batch_tokens * PASSES_PER_CALL
        self.max_wait_s = max_wait_s
        self.observe_batch = observe_batch
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._carried: Job | None = None
        self._stopped = False
        self._stop_seen = False
        self._thread = threading.Thread(target=self._loop, name="hf-indosent-batcher", daemon=True)

    @property
    def queued(self) -> int:
        """Requests waiting for a model call."""
        return self._queue.qsize() + (self._carried is not None)

    def start(self) -> None:
        self._thread.start()

    def submit(self, texts: Sequence[str], lengths: Sequence[int], key: Hashable) -> Job:
        if self._stopped:
            raise RequestError("Unhealthy", "the server is shutting down: send the request to another replica")
        job = Job(list(texts), list(lengths), key)
        self._queue.put(job)
        return job

    def stop(self, timeout: float = 5.0) -> None:
        """Refuse new jobs, let the thread finish the queued ones, and wait for it up to ``timeout`` seconds."""
        self._stopped = True
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _loop(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                self._run(batch)
            except Exception as err:  # never let one bad batch stop the thread: fail it and go on
                logger.exception("batch of %d requests failed", len(batch))
                _fail(batch, RequestError("Backend", f"this request's batch failed ({short_reason(err)})"))
        late = []  # submitted while stop() ran
        while not self._queue.empty():
            job = self._queue.get_nowait()
            if job is not None:
                late.append(job)
        _fail(late, RequestError("Unhealthy", "the server is shutting down: send the request to another replica"))

    def _next_batch(self) -> list[Job] | None:
        """The oldest job and those that join it within the token budget and the wait; ``None`` once stopped."""
        first, self._carried = self._carried, None
        if first is None and not self._stop_seen:
            first = self._queue.get()
        if first is None:
            return None
        batch, tokens = [first], first.tokens
        deadline = time.perf_counter() + self.max_wait_s
        while tokens < self.max_call_tokens:
            remaining = deadline - time.perf_counter()
            try:
                job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                self._stop_seen = True  # finish this batch, then stop
                break
            if tokens + job.tokens > self.max_call_tokens:
                self._carried = job  # the first job of the next batch
                break
            batch.append(job)
            tokens += job.tokens
        return batch

    def passes(self, lengths: Sequence[int]) -> Iterator[list[int]]:
        """Indices of ``lengths`` shortest first, cut into forward passes as the Predictor cuts them (at most
        ``max_pass_texts`` texts and ``max_pass_tokens`` padded tokens): each pass is one batch inside the model."""
        batch: list[int] = []
        for index in sorted(range(len(lengths)), key=lengths.__getitem__):
            # sorted ascending, so the newest text is the longest: the padded size is count x its length
            full = len(batch) == self.max_pass_texts or (len(batch) + 1) * lengths[index] > self.max_pass_tokens
            if batch and full:
                yield batch
                batch = []
            batch.append(index)
        if batch:
            yield batch

    def _run(self, batch: list[Job]) -> None:
        started = time.perf_counter()
        views: dict[Hashable, list[Job]] = {}
        for job in batch:
            if job.future.set_running_or_notify_cancel():  # False: the request was cancelled (client gone)
                job.queue_s = started - job.enqueued
                views.setdefault(job.key, []).append(job)
        for key, jobs in views.items():
            self._run_view(key, jobs)

    def _run_view(self, key: Hashable, jobs: list[Job]) -> None:
        """The texts of ``jobs`` (one view of the model) sorted by length and run pass by pass; each job is answered
        as soon as its last text is, so a short text does not wait for the long ones of the same call."""
        texts = [text for job in jobs for text in job.texts]
        lengths = [length for job in jobs for length in job.lengths]
        owners = [number for number, job in enumerate(jobs) for _ in job.texts]
        starts = list(itertools.accumulate((len(job.texts) for job in jobs), initial=0))
        rows: Rows = [{}] * len(texts)
        missing = [len(job.texts) for job in jobs]  # texts still to answer; -1 once the job failed
        begin = time.perf_counter()
        for indices in self.passes(lengths):
            indices = [index for index in indices if missing[owners[index]] > 0]
            if not indices:
                continue
            pass_begin = time.perf_counter()
            try:
                answers = self.run_model(key, [texts[index] for index in indices])
                if len(answers) != len(indices):
                    raise RuntimeError(f"the model answered {len(answers)} rows for {len(indices)} texts")
            except Exception as err:  # whatever the model raised: its requests get 424, the service goes on
                failed = sorted({owners[index] for index in indices})
                logger.exception("the model failed on %d texts from %d requests", len(indices), len(failed))
                reason = f"the model failed on this request's batch ({short_reason(err)}); the service is up"
                _fail([jobs[number] for number in failed], RequestError("Backend", reason))
                for number in failed:
                    missing[number] = -1
                continue
            if self.observe_batch is not None:
                tokens = sum(lengths[index] for index in indices)
                self.observe_batch(len(indices), tokens, time.perf_counter() - pass_begin)
            for index, row in zip(indices, answers, strict=True):
                rows[index] = row
                number = owners[index]
                missing[number] -= 1
                if missing[number] == 0:
                    job = jobs[number]
                    job.inference_s = time.perf_counter() - begin
                    job.future.set_result(rows[starts[number] : starts[number + 1]])


def _fail(jobs: list[Job], error: RequestError) -> None:
    """Answer each job still waiting with ``error`` (a request that was cancelled meanwhile needs no answer)."""
    for job in jobs:
        if job.future.done():
            continue
        if job.future.running() or job.future.set_running_or_notify_cancel():
            job.future.set_exception(RequestError(error.error_type, str(error)))
