"""The loop skeleton fine-tuning and adaptation share: batches -> forward/backward -> one optimizer step -> after-step.

Both loops (:func:`hf_indosent.training.loop.train_one_epoch` and
:func:`hf_indosent.training.adaptation.adapt_epoch`) run their epochs through :func:`train_steps`, so gradient
accumulation, clipping, the optimizer and per-step scheduler steps, zeroing and stop requests combined over processes
are written once. Each loop keeps only what differs: its forward/backward (classification loss over micro-batches or a
packed pass; masked-LM loss) and what it does after a step (epoch tallies, logging, checkpoints; a running loss).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

T = TypeVar("T")


def progress_bar(accelerator: Accelerator, total: int, initial: int = 0) -> tqdm:
    """The run's step bar, on the local main process only (other processes would print the same bar again)."""
    return tqdm(total=total, initial=min(initial, 10**12), unit="step", disable=not accelerator.is_local_main_process)


def optimizer_step(
    accelerator: Accelerator,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    max_grad_norm: float,
    scheduler: Any | None = None,
) -> None:
    """Clip the gradients (when they are synchronised: the last micro-step of an accumulation), step the optimizer and
    a per-step ``scheduler``, and zero the gradients. Inside ``accelerator.accumulate``, accelerate's prepared
    optimizer and scheduler skip the steps of an unfinished accumulation themselves."""
    if accelerator.sync_gradients:
        accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def any_process(accelerator: Accelerator, *flags: bool) -> tuple[bool, ...]:
    """Each flag, true when it is true on any process (a stop signal reaches one process, but all must stop after the
    same step, or the others would wait forever in the next collective). One process: the flags as they are."""
    if accelerator.num_processes == 1:
        return tuple(flags)
    summed = accelerator.reduce(torch.tensor([float(flag) for flag in flags], device=accelerator.device), "sum")
    return tuple(bool(value > 0) for value in summed.tolist())


def train_steps(
    accelerator: Accelerator,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[dict[str, Any]],
    *,
    forward_backward: Callable[[dict[str, Any]], T],
    after_step: Callable[[dict[str, Any], T], bool],
    max_grad_norm: float,
    scheduler: Any | None = None,
) -> bool:
    """Train on ``batches``: ``forward_backward(batch)`` (which calls ``accelerator.backward``) and
    :func:`optimizer_step` under ``accelerator.accumulate``, then ``after_step(batch, result)``. Returns True when
    ``after_step`` asked to stop (by returning True), False when the batches ran out."""
    for batch in batches:
        with accelerator.accumulate(model):
            result = forward_backward(batch)
            optimizer_step(accelerator, model, optimizer, max_grad_norm, scheduler)
        if after_step(batch, result):
            return True
    return False
