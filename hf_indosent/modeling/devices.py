"""Facts about the machine a run computes on that a run's defaults depend on: usable CPU cores and whether bf16
matmuls are faster than fp32 here. (The CPU's model and flags, and device sync for timing, are measurement code:
benchmarks/machine.py.)"""

from __future__ import annotations

import os
import time

import torch


def usable_cpu_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a container's share), not the machine's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


BF16_MIN_SPEEDUP = 1.3
"""How much faster than fp32 a bf16 matmul must run on this CPU for 'auto' precision to train in bf16. Flags alone
do not decide it: the same ``avx512_bf16`` flag was measured fast on one CPU and slower than fp32 on another
(docs/performance.md, "Device-aware defaults")."""


BF16_HOPELESS = 0.25
"""A first bf16 sample this far below fp32 ends the probe: emulated bf16 (AVX2-only CPUs) cannot come near
``BF16_MIN_SPEEDUP``, and each of its samples costs seconds instead of milliseconds."""


def bf16_matmul_speedup(threads: int | None = None, repeats: int = 5) -> float:
    """fp32 time over bf16 time of a BERT feed-forward-sized matmul on this CPU (best of ``repeats``, interleaved).

    Where bf16 is emulated one sample each is enough (see ``BF16_HOPELESS``). Interleaving the two and keeping each
    one's best makes a busy machine slow both alike, so the ratio holds even when
    absolute speeds do not."""
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
