"""What an unset (auto) setting means on this device: micro-batches, pinned memory, TF32, packing, mixed precision."""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import broadcast_object_list

from hf_indosent.core.arguments import ArgumentError
from hf_indosent.modeling.devices import BF16_MIN_SPEEDUP, bf16_matmul_speedup, usable_cpu_cores
from hf_indosent.training.arguments import FineTuneArguments
from hf_indosent.training.run_folder import (
    DEVICE_RESOLVED,
    recorded_launch,
)


def warn_if_few_cpu_threads(accelerator: Accelerator) -> None:
    """On CPU, `accelerate launch` sets OMP_NUM_THREADS=1 unless told otherwise: one core of a laptop would train."""
    cores = usable_cpu_cores() // accelerator.num_processes
    threads = torch.get_num_threads()
    if accelerator.device.type == "cpu" and threads < cores and accelerator.is_local_main_process:
        logger.warning(
            "Training on the CPU with %d thread(s) per process although %d core(s) per process are free "
            "(OMP_NUM_THREADS=%s). `accelerate launch` uses 1 thread unless told otherwise: add "
            "--num_cpu_threads_per_process %d to the launch command (before the script) to use them all.",
            threads,
            cores,
            os.environ.get("OMP_NUM_THREADS", "unset"),
            cores,
        )


logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceDefaults:
    """What an unset (auto) setting means on a device; docs/performance.md, "Device-aware defaults", has the figures."""

    micro_batches: int  # length-sorted parts per batch: less padding, but more, smaller passes
    pin_memory: bool  # page-locked host batches, copied to the GPU without blocking
    tf32: bool  # TensorFloat-32 matmuls (NVIDIA Ampere and newer)
    packing: bool = False  # one padding-free pass per batch (hf_indosent.training.packing)


CPU_DEFAULTS = DeviceDefaults(micro_batches=4, pin_memory=False, tf32=False, packing=True)


GPU_DEFAULTS = DeviceDefaults(micro_batches=1, pin_memory=True, tf32=True, packing=False)


GPU_MIXED_PRECISION = "no"  # fp32 with TF32: one H100 run of the MiniLM recipe, bf16 at 0.81x of fp32


def device_defaults(
    device: torch.device,
    args: FineTuneArguments,
    packing_unavailable: str | None = None,
    resumed: dict[str, Any] | None = None,
) -> DeviceDefaults:
    """The device's defaults, with every explicitly given argument taking precedence.

    ``packing_unavailable`` is why this model or launch cannot be packed (see
    :func:`hf_indosent.training.packing.packing_unavailable`): auto then falls back to micro-batches, ``--packing
    true`` is
    refused with the reason. ``resumed`` is the launch a resumed run recorded: its settings stand in for unset ones,
    so a run resumes as it was launched (also across a release that changed a default), never refused for it."""
    base = CPU_DEFAULTS if device.type == "cpu" else GPU_DEFAULTS
    if resumed:
        inherited = {name: resumed[name] for name in DEVICE_RESOLVED if getattr(args, name) is None and name in resumed}
        if "micro_batches" in inherited and "packing" not in resumed and args.packing is None:
            inherited["packing"] = False  # recorded before packing existed: it ran micro-batches
        if inherited.get("packing") and packing_unavailable:
            inherited.pop("packing")  # the resume check then names the change (packing True -> False)
            inherited.pop("micro_batches", None)  # 1 because it packed: unpacked, the device's default
        if inherited.get("packing") or args.packing:
            inherited.pop("micro_batches", None)  # packed: one pass per batch
        args = dataclasses.replace(args, **inherited)
    if args.packing and packing_unavailable:
        raise ArgumentError(f"--packing true: {packing_unavailable}; drop --packing to train with micro-batches")
    if args.packing is None:
        packing = base.packing and not packing_unavailable and args.micro_batches is None and not args.torch_compile
    else:
        packing = args.packing
    return DeviceDefaults(
        micro_batches=1 if packing else args.micro_batches or base.micro_batches,
        pin_memory=base.pin_memory and device.type == "cuda",
        tf32=(base.tf32 if args.tf32 is None else args.tf32) and device.type == "cuda",
        packing=packing,
    )


def resolve_mixed_precision(explicit: str | None, resumed_run: Path | None = None) -> str:
    """The precision a job computes in: ``explicit`` (the flag), then `accelerate launch`'s bf16/fp16, then what the
    run being resumed recorded, then the device's default: bf16 on a CPU whose bf16 matmuls measure faster than fp32,
    fp32 elsewhere.

    The CPU measurement is taken once, on the main process, and broadcast, so every process computes alike."""
    if explicit is not None:
        return explicit
    launched = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if launched != "no":
        return launched
    recorded = recorded_launch(resumed_run).get("mixed_precision") if resumed_run is not None else None
    if recorded:
        return recorded
    state = PartialState()
    if state.device.type != "cpu":
        return GPU_MIXED_PRECISION
    choice = [None]
    if state.is_main_process:
        choice = ["bf16" if bf16_matmul_speedup() >= BF16_MIN_SPEEDUP else "no"]
    if state.num_processes > 1:
        broadcast_object_list(choice)
    return choice[0]
