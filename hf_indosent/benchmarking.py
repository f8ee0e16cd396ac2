"""Side-by-side measurement for scripts/benchmark.py: machine facts, inference timing, and the ours/baseline table.

Kept apart from the script so the pieces are importable and tested on their own; the timers, RSS sampler, matmul
peak and FLOPs formulas they build on live in :mod:`hf_indosent.profiling`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, pipeline

from hf_indosent.prediction import Predictor
from hf_indosent.profiling import encoder_forward_flops, usable_cpu_cores

VERSIONED_PACKAGES = ("torch", "transformers", "datasets", "accelerate", "evaluate", "tokenizers", "hf-indosent")
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
"""CPU features that decide whether bf16 matmuls are native (avx512_bf16, AMX) or emulated."""


def load_average() -> dict[str, Any]:
    """1-, 5- and 15-minute load averages (and /proc/loadavg as is): other jobs make CPU timings unreliable."""
    proc = Path("/proc/loadavg")
    return {
        "averages": [round(value, 2) for value in os.getloadavg()],
        "proc_loadavg": proc.read_text(encoding="ascii").strip() if proc.is_file() else None,
    }


def _cpuinfo(path: str = "/proc/cpuinfo") -> tuple[str, set[str]]:
    model, flags = platform.processor() or platform.machine(), set()
    if os.path.isfile(path):
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    return model, flags


def system_info() -> dict[str, Any]:
    """Where the numbers come from: CPU model and features, cores, torch threads, GPU, load, package versions."""
    model, flags = _cpuinfo()
    versions = {}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu": model,
        "cpu_flags": {flag: flag in flags for flag in CPU_FLAGS},
        "logical_cores": os.cpu_count(),
        "usable_cores": usable_cpu_cores(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average": load_average(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def release_freed_memory() -> None:
    """Collect garbage and hand freed heap back to the OS (glibc ``malloc_trim``) before the next phase starts.

    Both pipelines run in one process: without this, the second could reuse pages the first freed but glibc kept,
    and its RSS growth would look smaller than it is.
    """
    gc.collect()
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return
    libc = ctypes.CDLL(libc_name)
    if hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def padding_fraction(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Share of computed positions that are padding when each batch is padded to its longest member."""
    positions = sum(len(batch) * max(lengths[index] for index in batch) for batch in batches)
    return 1 - sum(lengths) / positions


@dataclass
class InferencePath:
    """One way to classify the benchmark texts: ``run(texts)`` returns the labels; the rest describes its batches."""

    run: Callable[[list[str]], list[str]]
    lengths: Sequence[int]
    batches: Sequence[Sequence[int]]
    config: Any


def plain_pipeline_path(
    model_dir: str | Path, texts: list[str], *, batch_size: int = 32, max_length: int
) -> InferencePath:
    """``pipeline("text-classification")`` called plainly on the list with ``batch_size``: the reference path.

    ``truncation``/``max_length`` only keep over-long texts from crashing; they change nothing for shorter ones.
    """
    pipe = pipeline("text-classification", model=str(model_dir), device="cpu", truncation=True, max_length=max_length)
    lengths = pipe.tokenizer(texts, truncation=True, max_length=max_length, return_length=True)["length"]
    batches = [range(i, min(i + batch_size, len(texts))) for i in range(0, len(texts), batch_size)]
    return InferencePath(
        run=lambda items: [output["label"] for output in pipe(items, batch_size=batch_size)],
        lengths=lengths,
        batches=batches,
        config=pipe.model.config,
    )


def predict_path(model_dir: str | Path, texts: list[str], *, max_length: int) -> InferencePath:
    """Our path: a loaded :class:`Predictor` (length-sorted, token-budget batches, input order restored)."""
    predictor = Predictor(model_dir, device="cpu", max_length=max_length)
    lengths = predictor.pipe.tokenizer(texts, truncation=True, max_length=predictor.max_length, return_length=True)[
        "length"
    ]
    batches = []  # the batches predict() forms: chunk by chunk, as Predictor.stream reads its input
    for start in range(0, len(texts), predictor.chunk_size):
        chunk = lengths[start : start + predictor.chunk_size]
        batches += [[start + index for index in batch] for batch in predictor._batches(chunk)]
    return InferencePath(
        run=lambda items: [result["label"] for result in predictor(items)],
        lengths=lengths,
        batches=batches,
        config=AutoConfig.from_pretrained(str(model_dir)),
    )


def time_inference(
    paths: dict[str, InferencePath], texts: list[str], *, repeats: int = 3, warmup: int = 8
) -> dict[str, dict[str, Any]]:
    """Time every path ``repeats`` times, taking turns, and keep each one's fastest pass.

    Taking turns spreads slow spells of a shared machine over both paths; the fastest pass is the least disturbed
    (as ``timeit`` reports). Every pass is listed under ``all_seconds``. Labels come from the last pass.
    """
    for path in paths.values():
        path.run(texts[:warmup])  # first-call costs (kernel selection) are not throughput
    seconds: dict[str, list[float]] = {name: [] for name in paths}
    labels: dict[str, list[str]] = {}
    for _ in range(repeats):
        for name, path in paths.items():
            start = time.perf_counter()
            labels[name] = path.run(texts)
            seconds[name].append(time.perf_counter() - start)
    figures = {}
    for name, path in paths.items():
        best = min(seconds[name])
        flops = encoder_forward_flops(path.config, path.lengths, num_labels=path.config.num_labels)
        figures[name] = {
            "seconds": best,
            "all_seconds": seconds[name],
            "texts_per_s": len(texts) / best,
            "tokens_per_s": sum(path.lengths) / best,
            "padding_fraction": padding_fraction(path.lengths, path.batches),
            "flops": flops,
            "flops_per_s": flops / best,
            "labels": labels[name],
        }
    return figures


@dataclass(frozen=True)
class Comparison:
    """One figure for both pipelines; ``ratio`` is always ours / baseline, whichever direction is better."""

    figure: str
    unit: str
    baseline: float | None
    ours: float | None
    higher_is_better: bool

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.ours is None or self.baseline == 0:
            return None
        return self.ours / self.baseline

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "%":
        return f"{100 * value:.1f}%" if abs(value) >= 0.01 else f"{100 * value:.2g}%"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"


def render_table(rows: Sequence[Comparison], baseline_name: str = "baseline", ours_name: str = "ours") -> str:
    """A Markdown table: figure, unit, baseline, ours, ours/baseline (the README shows it as is)."""
    lines = [
        f"| figure | unit | {baseline_name} | {ours_name} | ours / baseline |",
        "|---|---|---:|---:|---:|",
    ]
    for row in rows:
        ratio = "n/a" if row.ratio is None else f"{row.ratio:.2f}x"
        baseline, ours = _number(row.baseline, row.unit), _number(row.ours, row.unit)
        lines.append(f"| {row.figure} | {row.unit} | {baseline} | {ours} | {ratio} |")
    return "\n".join(lines)
