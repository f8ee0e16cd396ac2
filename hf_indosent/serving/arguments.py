"""``hf-indosent serve`` options: where to listen and the service's limits (the model's are InferenceArguments).

Light at import (standard library and :mod:`hf_indosent.core.arguments`), like the other commands' arguments, so
``--help`` and usage errors answer before torch is imported. Names and defaults follow Hugging Face
text-embeddings-inference (TEI) where it has the same setting, so a TEI deployment's numbers carry over.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hf_indosent.core.arguments import check, check_numbers
from hf_indosent.inference.arguments import DEFAULT_HOST

DEFAULT_PORT = 8080
SERVE_CPU_BATCH_TOKENS = 512
"""``--max_batch_tokens`` of ``serve`` on a CPU when not given (``predict``'s 4096 otherwise): a model call of a few
dozen requests' texts mixes short and long ones, and the Predictor pads each forward pass to its longest text, so a
large budget pays for padding. Measured on 2 cores with MiniLM-L6 and 32 random SmSA texts per call: 4096 tokens
cost 1.6x the CPU time per text of 512 (87 vs 53 ms), which is on par with one text per call (57 ms)."""
MAX_WAIT_LIMIT_MS = 10_000.0
"""A longer wait for companions than this is a typo (milliseconds read as microseconds?), not a tuning choice."""


@dataclass
class ServeArguments:
    """``hf-indosent serve`` options besides the model's (:class:`~hf_indosent.inference.arguments.InferenceArguments`:
    ``--model``, ``--backend``, ``--max_batch_tokens``, ``--batch_size``, ``--max_length``, ``--device``).

    ``--max_batch_tokens`` is also the batcher's budget per model call; on a CPU it defaults to
    :data:`SERVE_CPU_BATCH_TOKENS` here."""

    host: str = field(
        default=DEFAULT_HOST,
        metadata={"help": "Address to listen on: 127.0.0.1 (this machine only, default) or 0.0.0.0 (every network)."},
    )
    port: int = field(default=DEFAULT_PORT, metadata={"help": f"TCP port (default {DEFAULT_PORT}; 0: any free one)."})
    workers: int = field(
        default=1,
        metadata={
            "help": "Server processes sharing the port, each with its own copy of the model and its share of the CPU "
            "cores (CPU backends only: on a GPU one process with its batcher uses it best)."
        },
    )
    max_wait_ms: float = field(
        default=2.0,
        metadata={
            "help": "How long the batcher waits for texts of other requests to join a model call before running it "
            "(under load the queue is never empty and nobody waits)."
        },
    )
    max_concurrent_requests: int = field(
        default=512,
        metadata={
            "help": "Texts handled at once (TEI's setting, counted as TEI does: a batch of 16 texts takes 16); a "
            "request whose texts do not fit gets 429 at once instead of waiting. The last text admitted waits about "
            "this many texts / the throughput: keep that below your clients' timeout."
        },
    )
    max_queue_seconds: float = field(
        default=20.0,
        metadata={
            "help": "Longest a request's texts may wait for the model behind those already admitted, at its recent "
            "speed; a request that would wait longer gets 429 at once, so an overloaded server tells clients to "
            "retry instead of letting them time out, whatever the model and hardware. Keep it below your clients' "
            "timeout; 0 turns it off (then only --max_concurrent_requests bounds the queue)."
        },
    )
    max_client_batch_size: int = field(
        default=32, metadata={"help": "Most texts one request may send; more get 413 (TEI's setting)."}
    )
    auto_truncate: bool = field(
        default=False,
        metadata={
            "help": "Truncate texts longer than the model's limit when a request does not say (`truncate` null); "
            "otherwise they get 413 (TEI's default)."
        },
    )
    payload_limit: int = field(
        default=2_000_000, metadata={"help": "Largest request body in bytes; a larger one gets 413 (TEI's setting)."}
    )
    api_key_env: str | None = field(
        default=None,
        metadata={
            "help": "Name of the environment variable that holds the API key: then every request but the health "
            "probes needs `Authorization: Bearer <key>` (the key itself never goes on the command line)."
        },
    )
    graceful_timeout: float = field(
        default=30.0,
        metadata={"help": "On SIGTERM/SIGINT, seconds the requests in flight get to finish before the server exits."},
    )
    access_log: bool = field(default=True, metadata={"help": "One JSON line per request on stderr."})

    def __post_init__(self) -> None:
        check_numbers(self)
        check(bool(self.host.strip()), "--host is empty: use 127.0.0.1 (this machine only) or 0.0.0.0 (your network)")
        check(0 <= self.port <= 65535, f"--port {self.port} is not a TCP port: use 1..65535 (0: any free port)")
        for name in ("workers", "max_concurrent_requests", "max_client_batch_size", "payload_limit"):
            value = getattr(self, name)
            check(isinstance(value, int) and value > 0, f"--{name} {value!r} must be a positive whole number")
        check(
            self.max_client_batch_size <= self.max_concurrent_requests,
            f"--max_client_batch_size {self.max_client_batch_size} > --max_concurrent_requests "
            f"{self.max_concurrent_requests}: a batch that large could never be admitted (the limit counts texts); "
            "raise --max_concurrent_requests or lower --max_client_batch_size",
        )
        check(
            0 <= self.max_wait_ms <= MAX_WAIT_LIMIT_MS,
            f"--max_wait_ms {self.max_wait_ms} is out of range: use 0..{MAX_WAIT_LIMIT_MS:g} milliseconds (default 2)",
        )
        check(
            self.max_queue_seconds >= 0,
            f"--max_queue_seconds {self.max_queue_seconds} must be >= 0 seconds (0 turns the bound off)",
        )
        check(self.graceful_timeout >= 0, f"--graceful_timeout {self.graceful_timeout} must be >= 0 seconds")
        check(
            self.api_key_env is None or bool(self.api_key_env.strip()),
            "--api_key_env is empty: name the environment variable that holds the key, e.g. --api_key_env SERVE_KEY",
        )
