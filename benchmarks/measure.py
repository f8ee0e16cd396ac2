"""Measuring tools for the benchmarks: timers, peak memory, the matmul peak, model FLOPs, machine facts, the table.

Standard library, torch and hf_indosent.modeling.devices only, so every pipeline (ours, the tutorial's,
transformers.Trainer)
is measured the same way. Not part of the hf_indosent package: the benchmarks import it as a sibling module.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import math
import os
import platform
import resource
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import torch
from machine import cpu_info, synchronize

from hf_indosent.modeling.devices import usable_cpu_cores

TRAINING_FLOPS_MULTIPLIER = 3
"""Training FLOPs ≈ 3x forward: the backward pass costs about twice the forward (grads of inputs and weights)."""

INVALID_MFU = "invalid (peak measured too low)"
"""What a utilisation above 100% is reported as: the measured peak was below what the model then achieved."""

VERSIONED_PACKAGES = ("torch", "transformers", "datasets", "accelerate", "evaluate", "tokenizers", "hf-indosent")


# ----------------------------------------------------------------------------------------------------------------
# Time and memory


class Timer:
    """Wall-clock seconds of a ``with`` block (``perf_counter``), readable after the block as ``.seconds``.

    With a CUDA ``device`` it synchronises on entry and exit: kernels run asynchronously, so without it the clock
    would stop before the work does.
    """

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.seconds = 0.0
        self._start = 0.0

    def __enter__(self) -> Timer:
        synchronize(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        synchronize(self.device)
        self.seconds = time.perf_counter() - self._start


def current_rss_mib(status_path: str = "/proc/self/status") -> float:
    """Resident set size now, in MiB, from Linux's ``VmRSS`` (``ru_maxrss`` only gives the peak since start)."""
    with open(status_path, encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024  # reported in kB
    raise RuntimeError(f"no VmRSS line in {status_path}: peak RSS sampling needs Linux /proc")


def process_max_rss_mib() -> float:
    """Peak RSS of this whole process since it started (``ru_maxrss``, kB on Linux), in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class PeakRSSSampler:
    """Peak RSS (MiB) during a ``with`` block, sampled by a background thread every ``interval_s``.

    ``ru_maxrss`` is the peak since the process started and cannot be reset, so a phase that runs after a hungrier
    one would inherit its peak; sampling gives each phase its own. Peaks shorter than the interval can be missed.
    After the block: ``start_mib`` (RSS on entry), ``peak_mib`` and ``end_mib``.
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


class DeviceMemoryPeak:
    """Peak memory torch allocated on a CUDA device during a ``with`` block (``max_memory_allocated``), in MiB.

    ``peak_mib`` stays None on the CPU, where :class:`PeakRSSSampler` is the figure.
    """

    def __init__(self, device: str | torch.device) -> None:
        self.device = torch.device(device)
        self.peak_mib: float | None = None

    def __enter__(self) -> DeviceMemoryPeak:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            self.peak_mib = torch.cuda.max_memory_allocated(self.device) / 2**20


def release_freed_memory() -> None:
    """Collect garbage and hand freed heap back to the OS (glibc ``malloc_trim``) before the next phase starts.

    Otherwise a phase could reuse pages an earlier one freed but glibc kept, and its RSS growth would look smaller.
    """
    gc.collect()
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return
    libc = ctypes.CDLL(libc_name)
    if hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


# ----------------------------------------------------------------------------------------------------------------
# Peak FLOP/s and model FLOPs utilisation


@dataclass(frozen=True)
class MatmulPeak:
    """Best achieved FLOP/s of square matmuls in one process, with what it was measured on."""

    dtype: str
    device: str
    threads: int
    flops_per_s: float
    by_size: dict[int, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_matmul_peak(
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    sizes: Sequence[int] = (512, 1024, 2048),
    repeats: int = 5,
    warmup_s: float = 0.3,
    sample_s: float = 0.02,
) -> MatmulPeak:
    """The practical peak that model FLOPs utilisation divides by: the best FLOP/s of ``size``-square matmuls.

    A vendor's theoretical peak is unreachable (and unknown on a VM), so the ceiling is measured in the same process
    as the timed work, on its device, dtype and thread count (``torch.get_num_threads()`` now). A single timed GEMM
    was found to under-read it (once giving 170% utilisation), so for each size: ``warmup_s`` of untimed calls
    (page faults, kernel selection, clock ramp-up), then ``repeats`` samples of enough calls to last ``sample_s``
    each; the best call over every size and sample is the peak.
    """
    if not sizes or min(sizes) < 1 or repeats < 1:
        raise ValueError(f"sizes={list(sizes)} and repeats={repeats} must be positive: e.g. sizes=(512, 1024, 2048)")
    device = torch.device(device)
    generator = torch.Generator().manual_seed(0)
    by_size = {}
    for size in sizes:
        a, b = (torch.randn(size, size, generator=generator).to(device=device, dtype=dtype) for _ in range(2))
        out = torch.empty_like(a)
        calls, start = 0, time.perf_counter()
        while calls < 2 or time.perf_counter() - start < warmup_s:
            torch.matmul(a, b, out=out)
            synchronize(device)
            calls += 1
        per_sample = max(1, math.ceil(sample_s / ((time.perf_counter() - start) / calls)))
        best = math.inf
        for _ in range(repeats):
            with Timer(device) as timer:
                for _ in range(per_sample):
                    torch.matmul(a, b, out=out)
            best = min(best, timer.seconds / per_sample)
        by_size[size] = 2 * size**3 / best
    return MatmulPeak(
        dtype=str(dtype).removeprefix("torch."),
        device=str(device),
        threads=torch.get_num_threads(),
        flops_per_s=max(by_size.values()),
        by_size=by_size,
    )


def utilisation(flops: float, seconds: float, peak_flops_per_s: float) -> float | str:
    """Model FLOPs utilisation: useful FLOP/s over the measured peak, or :data:`INVALID_MFU` above 100%.

    Above 100% the work ran faster than the "peak", so the peak was measured too low (a disturbed measurement); such
    a number must never be reported as a result.
    """
    if flops <= 0 or seconds <= 0 or peak_flops_per_s <= 0:
        raise ValueError(
            f"utilisation needs positive figures, got flops={flops}, seconds={seconds}, peak={peak_flops_per_s}: "
            "was any work timed?"
        )
    value = flops / seconds / peak_flops_per_s
    return value if value <= 1 else INVALID_MFU


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


def padding_fraction(real_tokens: int, positions: int) -> float:
    """Share of computed positions that are padding."""
    return 1 - real_tokens / positions if positions else 0.0


# ----------------------------------------------------------------------------------------------------------------
# The machine


def load_average() -> list[float]:
    """1-, 5- and 15-minute load averages: other jobs on the machine make CPU timings unreliable."""
    return [round(value, 2) for value in os.getloadavg()]


def system_info() -> dict[str, Any]:
    """Where the numbers come from: CPU model and features, cores, load, package versions (each path records its
    own torch threads and device)."""
    cpu = cpu_info()
    versions = {}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu": {"model": cpu.model, "flags": cpu.features()},
        "logical_cores": os.cpu_count(),
        "usable_cores": usable_cpu_cores(),
        "load_average": load_average(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def device_name(device: str | torch.device) -> str:
    """The GPU's name for a CUDA device, else the CPU model (call it where the device is already in use)."""
    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_info().model


# ----------------------------------------------------------------------------------------------------------------
# The comparison table

Cell = float | str | None
"""A figure, the reason it is not a number (e.g. :data:`INVALID_MFU`), or None when the path has no such figure."""


@dataclass(frozen=True)
class Comparison:
    """One figure for ours and for each peer; every ratio is ours / peer, whichever direction is better."""

    figure: str
    unit: str
    ours: Cell
    peers: dict[str, Cell]
    higher_is_better: bool

    def ratio(self, peer: str) -> float | None:
        theirs = self.peers.get(peer)
        if not isinstance(self.ours, float | int) or not isinstance(theirs, float | int) or theirs == 0:
            return None
        return self.ours / theirs

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratios": {peer: self.ratio(peer) for peer in self.peers}}


def format_cell(value: Cell, unit: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if unit == "%":
        return f"{100 * value:.1f}%" if abs(value) >= 0.01 else f"{100 * value:.2g}%"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"


def render_table(rows: Sequence[Comparison], peer_names: dict[str, str], ours_name: str = "hf_indosent") -> str:
    """A Markdown table: figure, unit, one column per peer, ours, then ours / each peer (blank: no such figure).

    ``peer_names`` maps the peers' keys to column titles, in column order.
    """
    peers = [peer for peer in peer_names if any(peer in row.peers for row in rows)]
    titles = [peer_names[peer] for peer in peers]
    lines = [
        "| " + " | ".join(["figure", "unit", *titles, ours_name, *(f"ours / {title}" for title in titles)]) + " |",
        "|---|---|" + "---:|" * (2 * len(peers) + 1),
    ]
    for row in rows:
        values = [format_cell(row.peers.get(peer), row.unit) for peer in peers]
        ratios = [
            "" if peer not in row.peers else "n/a" if row.ratio(peer) is None else f"{row.ratio(peer):.2f}x"
            for peer in peers
        ]
        lines.append(
            "| " + " | ".join([row.figure, row.unit, *values, format_cell(row.ours, row.unit), *ratios]) + " |"
        )
    return "\n".join(lines)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path``, creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
