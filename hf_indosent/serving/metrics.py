"""Prometheus metrics of the service, in the text format ``GET /metrics`` returns (prometheus_client, extra ``serve``).

The counterparts of TEI's ``te_*`` metrics, named the Prometheus way (seconds, ``_total``): predict requests,
successes, failures by error type; histograms of each request's total, tokenization, queue and inference time; the
texts and tokens of each forward pass; gauges of requests and texts in flight, of requests queued and of the wait
the texts in flight make. Each app has its own registry, so several apps in one process (tests, a user's server) do
not mix their counts. With ``--workers N`` each process counts its own requests (a scrape reaches one of them; scrape
the replicas or run one worker per container).

Without prometheus_client the service runs the same and ``/metrics`` says how to install it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

PREFIX = "hf_indosent_serve"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
TOKEN_BUCKETS = (16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
INSTALL_HINT = 'pip install -e ".[serve]" (prometheus-client)'


class ServeMetrics:
    """The service's counters and histograms; every method is a no-op when prometheus_client is missing."""

    def __init__(
        self,
        in_flight: Callable[[], int],
        queued: Callable[[], int],
        texts_in_flight: Callable[[], int] = lambda: 0,
        queue_wait: Callable[[], float] = lambda: 0.0,
    ) -> None:
        try:
            self._client: Any = importlib.import_module("prometheus_client")
        except ModuleNotFoundError:
            self._client = None
            return
        client = self._client
        self.registry = client.CollectorRegistry()
        self.requests = client.Counter(f"{PREFIX}_requests", "Predict requests received", registry=self.registry)
        self.successes = client.Counter(
            f"{PREFIX}_request_successes", "Predict requests answered", registry=self.registry
        )
        self.failures = client.Counter(
            f"{PREFIX}_request_failures", "Predict requests refused or failed", ["error_type"], registry=self.registry
        )
        self.durations = {
            stage: client.Histogram(
                f"{PREFIX}_request_{stage}_seconds" if stage else f"{PREFIX}_request_seconds",
                f"Seconds of each answered predict request spent in {stage or 'total'}",
                buckets=LATENCY_BUCKETS,
                registry=self.registry,
            )
            for stage in ("", "tokenization", "queue", "inference")
        }
        self.batch_size = client.Histogram(
            f"{PREFIX}_batch_size", "Texts per forward pass", buckets=SIZE_BUCKETS, registry=self.registry
        )
        self.batch_tokens = client.Histogram(
            f"{PREFIX}_batch_tokens", "Tokens per forward pass", buckets=TOKEN_BUCKETS, registry=self.registry
        )
        self.batch_seconds = client.Histogram(
            f"{PREFIX}_batch_seconds", "Seconds per forward pass", buckets=LATENCY_BUCKETS, registry=self.registry
        )
        for name, about, value in (
            ("requests_in_flight", "Predict requests being handled", in_flight),
            (
                "texts_in_flight",
                "Texts admitted and not yet answered (what --max_concurrent_requests bounds)",
                texts_in_flight,
            ),
            ("queue_size", "Requests waiting for a model call", queued),
            (
                "queue_wait_seconds",
                "About how long the texts in flight take the model at its recent speed (--max_queue_seconds bounds it)",
                queue_wait,
            ),
        ):
            client.Gauge(f"{PREFIX}_{name}", about, registry=self.registry).set_function(value)

    @property
    def available(self) -> bool:
        return self._client is not None

    def request(self, error_type: str | None) -> None:
        """A predict request answered: a success, or a failure of TEI's ``error_type``."""
        if self._client is None:
            return
        self.requests.inc()
        if error_type is None:
            self.successes.inc()
        else:
            self.failures.labels(error_type=error_type).inc()

    def timings(self, total_s: float, tokenization_s: float, queue_s: float, inference_s: float) -> None:
        """The stages of one answered predict request."""
        if self._client is None:
            return
        stages = {"": total_s, "tokenization": tokenization_s, "queue": queue_s, "inference": inference_s}
        for stage, seconds in stages.items():
            self.durations[stage].observe(seconds)

    def batch(self, texts: int, tokens: int, seconds: float) -> None:
        """One forward pass (the batcher's ``observe_batch``)."""
        if self._client is None:
            return
        self.batch_size.observe(texts)
        self.batch_tokens.observe(tokens)
        self.batch_seconds.observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type."""
        return self._client.generate_latest(self.registry), self._client.CONTENT_TYPE_LATEST
