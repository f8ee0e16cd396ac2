"""Measurement helpers for the benchmark: phase timers, peak RSS of a phase, matmul peak FLOP/s and model FLOPs.

Standard library and torch only, so the benchmark can measure any pipeline (ours or the tutorial's) the same way.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from types import TracebackType
from typing import Protocol

import torch

TRAINING_FLOPS_MULTIPLIER = 3
"""Training FLOPs ≈ 3x forward: the backward pass costs about twice the forward (grads of inputs and weights)."""


def usable_cpu_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a container's share), not the machine's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Timer:
    """Wall-clock seconds of a ``with`` block (``perf_counter``), readable after the block as ``.seconds``."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._start = 0.0

    def __enter__(self) -> Timer:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start


def current_rss_mib(status_path: str = "/proc/self/status") -> float:
    """Resident set size now, in MiB, from Linux's ``VmRSS`` (``ru_maxrss`` only gives the peak since start)."""
    with open(status_path, encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024  # reported in kB
    raise RuntimeError(f"no VmRSS line in {status_path}: peak RSS sampling needs Linux /proc")


class PeakRSSSampler:
    """Peak RSS (MiB) during a ``with`` block, sampled by a background thread every ``interval_s``.

    ``resource.getrusage().ru_maxrss`` is the peak since the process started and cannot be reset, so a phase that
    runs after a hungrier one would inherit its peak; sampling gives each phase its own. Peaks shorter than the
    interval can be missed. After the block: ``start_mib`` (RSS on entry), ``peak_mib`` and ``end_mib``.
    """

    def __init__(self, interval_s: float = 0.01) -> None:
        self.interval_s = interval_s
        self.start_mib = self.peak_mib = self.end_mib = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_mib = max(self.peak_mib, current_rss_mib())

    def __enter__(self) -> PeakRSSSampler:
        self.start_mib = self.peak_mib = current_rss_mib()
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, name="peak-rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.end_mib = current_rss_mib()
        self.peak_mib = max(self.peak_mib, self.end_mib)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_matmul_peak_flops(
    dtype: torch.dtype = torch.float32,
    size: int = 2048,
    repeats: int = 5,
    warmup: int = 2,
    device: str | torch.device = "cpu",
) -> float:
    """Best achieved FLOP/s of a ``size``-square matmul: the practical peak that model FLOPs utilisation divides by.

    A vendor's theoretical peak is unreachable (and unknown on a VM); a large GEMM measured in the same run on the
    same threads is the ceiling a transformer's matmuls could approach. Best of ``repeats`` after ``warmup`` runs,
    so one-off costs (page faults, kernel selection, frequency ramp-up) are not counted.
    """
    device = torch.device(device)
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, generator=generator, device=device).to(dtype)
    b = torch.randn(size, size, generator=generator, device=device).to(dtype)
    out = torch.empty(size, size, dtype=dtype, device=device)
    for _ in range(warmup):
        torch.matmul(a, b, out=out)
    _synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b, out=out)
        _synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


class EncoderConfig(Protocol):
    """The fields of a BERT-style ``PretrainedConfig`` that its FLOPs depend on."""

    hidden_size: int
    num_hidden_layers: int
    intermediate_size: int


def encoder_flops_per_token(config: EncoderConfig, seq_len: int) -> int:
    """Forward FLOPs per token of a BERT-style encoder stack that attends over ``seq_len`` positions.

    Per layer and token: ``2 * (4 h^2 + 2 h i)`` for the Q, K, V, output and two feed-forward matmuls (2 FLOPs per
    multiply-add of each weight), plus ``2 * 2 * seq_len * h`` for the attention scores ``QK^T`` and the weighted
    sum ``AV``. Embedding lookups, layer norms, softmax, activations and biases are left out (a few percent), as in
    the usual ``6 N`` estimate; so is the pooler/classifier head, which runs once per sequence (see
    :func:`encoder_forward_flops`).
    """
    h, i = config.hidden_size, config.intermediate_size
    per_layer = 2 * (4 * h * h + 2 * h * i) + 2 * 2 * seq_len * h
    return config.num_hidden_layers * per_layer


def encoder_forward_flops(config: EncoderConfig, seq_lengths: Iterable[int], num_labels: int = 0) -> int:
    """Forward FLOPs of a sequence classifier over sequences of the given (real, unpadded) lengths.

    Counting real lengths gives the *useful* work, so padding shows up as lost utilisation rather than as FLOPs.
    With ``num_labels`` > 0 each sequence adds the pooler (``2 h^2``) and the classifier (``2 h num_labels``).
    """
    h = config.hidden_size
    head = 2 * (h * h + h * num_labels) if num_labels else 0
    return sum(length * encoder_flops_per_token(config, length) + head for length in seq_lengths)


def encoder_training_flops(config: EncoderConfig, seq_lengths: Iterable[int], num_labels: int = 0) -> int:
    """Training FLOPs (forward + backward ≈ 3x forward) over sequences of the given real lengths."""
    return TRAINING_FLOPS_MULTIPLIER * encoder_forward_flops(config, seq_lengths, num_labels)
