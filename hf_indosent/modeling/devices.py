"""Facts about the machine a run computes on: usable CPU cores, the CPU's model and features, device sync.

Standard library and torch only, so training, prediction and the benchmarks (benchmarks/) can all ask the same way.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field

import torch

CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
"""CPU features that decide how fast low-precision matmuls run: native (VNNI, avx512_bf16, AMX) or emulated."""


def usable_cpu_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a container's share), not the machine's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class CpuInfo:
    """The CPU's model name and its feature flags (``/proc/cpuinfo`` on Linux; empty flags elsewhere)."""

    model: str
    flags: frozenset[str] = field(default_factory=frozenset)

    @property
    def amx(self) -> bool:
        """Intel AMX tiles (``amx_*`` flags): bf16/int8 matmuls several times faster than AVX-512."""
        return any(flag.startswith("amx") for flag in self.flags)

    def features(self) -> dict[str, bool]:
        """Presence of each flag in :data:`CPU_FLAGS`, plus ``amx`` (any AMX flag)."""
        return {**{flag: flag in self.flags for flag in CPU_FLAGS}, "amx": self.amx}


def cpu_info(path: str = "/proc/cpuinfo") -> CpuInfo:
    """The first CPU's ``model name`` and ``flags``; without ``path`` (not Linux), ``platform``'s best guess."""
    model, flags = platform.processor() or platform.machine() or "unknown CPU", frozenset()
    if os.path.isfile(path):
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = frozenset(value.split())
                    break
    return CpuInfo(model, flags)


def synchronize(device: str | torch.device) -> None:
    """Wait for the device's queued work: CUDA kernels run asynchronously, so a clock read without this lies."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


BF16_MIN_SPEEDUP = 1.3
"""How much faster than fp32 a bf16 matmul must run on this CPU for 'auto' precision to train in bf16.

Flags alone do not decide it: on an AMD EPYC (Zen 4, ``avx512_bf16``) bf16 matmuls ran 4.5x fp32 and training 1.7x,
on an Intel Xeon with the same flag but no AMX 0.54x and 0.7x (docs/performance.md, "Device-aware defaults")."""


BF16_HOPELESS = 0.25
"""A first bf16 sample this far below fp32 ends the probe: emulated bf16 (AVX2-only CPUs, e.g. AMD Zen 3, read
0.008x) cannot come near ``BF16_MIN_SPEEDUP``, and each of its samples costs seconds instead of milliseconds."""


def bf16_matmul_speedup(threads: int | None = None, repeats: int = 5) -> float:
    """fp32 time over bf16 time of a BERT feed-forward-sized matmul on this CPU (best of ``repeats``, interleaved).

    About 0.1-0.3 s where bf16 is native (about 2 s where it is emulated: one sample each, see ``BF16_HOPELESS``).
    Interleaving the two and keeping each one's best makes a busy machine slow both alike, so the ratio holds even
    when absolute speeds do not."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        generator = torch.Generator().manual_seed(0)
        left, right = torch.randn(512, 384, generator=generator), torch.randn(384, 1536, generator=generator)
        pairs = {torch.float32: (left, right), torch.bfloat16: (left.bfloat16(), right.bfloat16())}
        best = dict.fromkeys(pairs, float("inf"))
        for _ in range(repeats):
            for dtype, (a, b) in pairs.items():
                best[dtype] = min(best[dtype], matmul_seconds(a, b))
            if best[torch.float32] < BF16_HOPELESS * best[torch.bfloat16]:
                break
        return best[torch.float32] / best[torch.bfloat16]
    finally:
        torch.set_num_threads(previous)


def matmul_seconds(a: torch.Tensor, b: torch.Tensor, calls: int = 4) -> float:
    """Seconds for ``calls`` products ``a @ b`` after one untimed call (the first call of a kernel pays its setup)."""
    a @ b
    start = time.perf_counter()
    for _ in range(calls):
        a @ b
    return time.perf_counter() - start
