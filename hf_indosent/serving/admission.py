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
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from hf_indosent.serving.protocol import RequestError


class Admission:
    """The texts and requests being answered, against ``limit`` texts (``--max_concurrent_requests``)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.texts = 0
        """Texts admitted and not yet answered: the permits taken."""
        self.requests = 0
        """Predict requests being handled, from arrival (body not yet read) to answer."""

    @contextlib.contextmanager
    def request(self) -> Iterator[None]:
        """A request from arrival to answer: refused at once (429) when no permit is free, before its body is read."""
        if self.texts >= self.limit:
            raise RequestError(
                "Overloaded",
                f"{self.texts} texts are being answered, the most this server takes (--max_concurrent_requests "
                f"{self.limit}): retry later",
            )
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
        self.texts += count
        try:
            yield
        finally:
            self.texts -= count
