"""Admission: how much work the service holds at once, and 429 at once for anything beyond it.

Hugging Face text-embeddings-inference (TEI) gives each *text* a permit of ``--max_concurrent_requests`` (a semaphore
of that many permits; a client batch of 16 texts takes 16), and answers 429 ``Overloaded`` when none is free. This
service counts the same way, so the limit bounds the texts waiting for the model, not the requests: a budget of 512
permits is 512 texts whether they come as 512 single-text requests or as 32 batches of 16, and the last one admitted
waits at most ``limit / throughput`` seconds. (Counting requests let 64 batches of 16, 1,024 texts, into a queue that
took longer to answer than the client waited: timeouts instead of 429s.)

A request takes all its permits or none (TEI's batch route waits for the missing ones; here nothing waits, so
overload is always an immediate 429 and never a timeout): it is refused before its body is read when every permit is
taken, and after it is parsed when its texts do not fit in what is free. Everything runs on the app's event loop, so
the counts need no lock.

A fixed number of texts is a fixed wait only for one model on one machine: 512 texts take 5 s where the model answers
100 a second and 50 s where it answers 10, past most clients' timeout. So admission also keeps the model's recent time
per text (a moving average over its forward passes, weighted by their texts) and refuses, with 429 at once, a
request whose texts would wait longer than ``--max_queue_seconds`` behind those already admitted: under overload a
client is told to retry instead of timing out, whatever the model and the hardware. A request that finds nothing in
flight is always admitted (it is the model's own speed, not a queue, that it waits for).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from hf_indosent.serving.protocol import RequestError

SMOOTHING = 0.2
"""Weight of the newest forward pass in the moving averages of :meth:`Admission.observe` (about the last ten count)."""


class Admission:
    """The texts and requests being answered, against ``limit`` texts (``--max_concurrent_requests``) and
    ``max_queue_s`` seconds of waiting (``--max_queue_seconds``; 0 turns that bound off)."""

    def __init__(self, limit: int, max_queue_s: float = 0.0) -> None:
        self.limit = limit
        self.max_queue_s = max_queue_s
        self.texts = 0
        """Texts admitted and not yet answered: the permits taken."""
        self.requests = 0
        """Predict requests being handled, from arrival (body not yet read) to answer."""
        self._pass_seconds: float | None = None
        self._pass_texts = 0.0
        """Moving averages of a forward pass's seconds and texts, written by the inference thread (each a single
        attribute store, read whole on the event loop: no lock needed)."""

    def observe(self, texts: int, seconds: float) -> None:
        """One forward pass of the model answered ``texts`` texts in ``seconds`` (the batcher's ``observe_batch``)."""
        if self._pass_seconds is None:
            self._pass_seconds, self._pass_texts = seconds, float(texts)
            return
        self._pass_seconds += SMOOTHING * (seconds - self._pass_seconds)
        self._pass_texts += SMOOTHING * (texts - self._pass_texts)

    @property
    def seconds_per_text(self) -> float | None:
        """The model's recent time per text, or None before its first forward pass."""
        if self._pass_seconds is None or self._pass_texts <= 0:
            return None
        return self._pass_seconds / self._pass_texts

    def wait_s(self, count: int = 0) -> float:
        """About how long ``count`` more texts would wait for the model, behind the texts already admitted."""
        return (self.texts + count) * (self.seconds_per_text or 0.0)

    def _check_wait(self, count: int) -> None:
        """429 when ``count`` more texts would wait past ``max_queue_s`` (never when nothing is in flight)."""
        if not self.max_queue_s or not self.texts or (wait := self.wait_s(count)) <= self.max_queue_s:
            return
        what = f"this request's {count} texts" if count else "a new request"
        raise RequestError(
            "Overloaded",
            f"{self.texts} texts are being answered, about {self.wait_s():.1f} s of the model's time: {what} would "
            f"wait about {wait:.1f} s, more than this server makes a client wait (--max_queue_seconds "
            f"{self.max_queue_s:g}): retry later",
        )

    @contextlib.contextmanager
    def request(self) -> Iterator[None]:
        """A request from arrival to answer: refused at once (429) when no permit is free, before its body is read."""
        if self.texts >= self.limit:
            raise RequestError(
                "Overloaded",
                f"{self.texts} texts are being answered, the most this server takes (--max_concurrent_requests "
                f"{self.limit}): retry later",
            )
        self._check_wait(0)
        self.requests += 1
        try:
            yield
        finally:
            self.requests -= 1

    @contextlib.contextmanager
    def texts_of(self, count: int) -> Iterator[None]:
        """``count`` permits while the request's texts are answered, or 429 at once when fewer are free."""
        if self.texts + count > self.limit:
            free = max(0, self.limit - self.texts)
            raise RequestError(
                "Overloaded",
                f"this request's {count} texts do not fit: {self.texts} of the {self.limit} this server takes at once "
                f"(--max_concurrent_requests) are being answered, {free} free: retry later",
            )
        self._check_wait(count)
        self.texts += count
        try:
            yield
        finally:
            self.texts -= count
