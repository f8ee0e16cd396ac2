"""The CPU's model and feature flags, and device sync for timing: what the benchmarks record and need, kept out of
the package (a user's run needs neither)."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field

import torch

CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
"""CPU features that decide how fast low-precision matmuls run: native (VNNI, avx512_bf16, AMX) or emulated."""


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
