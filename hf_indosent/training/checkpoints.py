"""Checkpoints that survive a crash at any moment.

A checkpoint is ``accelerator.save_state`` (model, optimizer, scheduler, RNG of every process) plus our
``train_state.json`` (epoch, step, best metric, early-stopping counter, history, and the size of every file). It is
written into a hidden temporary folder and renamed into place only when complete, so a folder named ``checkpoint-*``
is whole; one whose files do not match ``train_state.json`` (written last) is skipped with a warning, falling back to
the previous checkpoint. The best model is swapped in the same way.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from hf_indosent.core.files import fsync_dir, make_readable, removed_on_error, write_json
from hf_indosent.modeling.folders import CHECKPOINTS

logger = logging.getLogger(__name__)

STATE_FILE = "train_state.json"
_NAME = re.compile(r"^checkpoint-e(\d+)-s(\d+)$")


class CheckpointClock:
    """Time since the last checkpoint, so a hard kill never costs more than ``minutes`` of training."""

    def __init__(self, minutes: float | None) -> None:
        self.seconds = minutes * 60 if minutes else None
        self.last = time.monotonic()

    def due(self) -> bool:
        return self.seconds is not None and time.monotonic() - self.last >= self.seconds

    def reset(self) -> None:
        self.last = time.monotonic()


@dataclass
class TrainState:
    """Everything besides tensors that a resumed run needs to continue exactly where it stopped."""

    epoch: int = 0  # epochs completed
    step_in_epoch: int = 0  # batches of the current epoch already trained on
    global_step: int = 0  # optimizer steps
    best_metric: float = -math.inf
    best_epoch: int = 0
    epochs_without_improvement: int = 0
    train_seconds: float = 0.0
    train_samples: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_validation: dict[str, Any] = field(default_factory=dict)
    # running sums of the current epoch, so a mid-epoch resume reports the same epoch metrics
    epoch_sums: dict[str, Any] = field(
        default_factory=lambda: {
            "loss": 0.0,
            "batches": 0,
            "tokens": 0,
            "positions": 0,
            "seconds": 0.0,
            "confusion": [],  # training predictions as counts: rows are references, columns predictions
        }
    )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["best_metric"] = None if math.isinf(self.best_metric) else self.best_metric  # JSON has no -inf
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainState:
        data = dict(data)
        data["best_metric"] = -math.inf if data["best_metric"] is None else data["best_metric"]
        return cls(**data)


def checkpoint_name(state: TrainState) -> str:
    return f"checkpoint-e{state.epoch:04d}-s{state.global_step:09d}"


def _file_sizes(folder: Path) -> dict[str, int]:
    return {
        str(path.relative_to(folder)): path.stat().st_size
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != STATE_FILE
    }


def checkpoint_problem(folder: Path) -> str | None:
    """Why ``folder`` is not a usable checkpoint (missing, truncated or unreadable files), or None if it is."""
    try:
        recorded = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))["files"]
    except FileNotFoundError:
        return f"no {STATE_FILE}"
    except (ValueError, KeyError, TypeError) as err:
        return f"unreadable {STATE_FILE} ({err})"
    actual = _file_sizes(folder)
    for name, size in recorded.items():
        if name not in actual:
            return f"{name} is missing"
        if actual[name] != size:
            return f"{name} has {actual[name]} bytes, {size} were written"
    return None


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Usable checkpoints, oldest first. Incomplete or damaged ones are reported and skipped."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    usable = []
    for folder in sorted(root.iterdir()):
        if not folder.is_dir() or not _NAME.match(folder.name):
            continue
        problem = checkpoint_problem(folder)
        if problem is None:
            usable.append(folder)
        else:
            logger.warning("Skipping checkpoint %s: %s", folder, problem)
    return usable


def save_checkpoint(accelerator: Accelerator, run_dir: Path, state: TrainState, keep: int) -> Path:
    """Save the full training state as a new checkpoint and keep only the last ``keep`` checkpoints."""
    root = Path(run_dir) / CHECKPOINTS
    final = root / checkpoint_name(state)
    staging = root / f".tmp-{final.name}"
    if accelerator.is_main_process:
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
    accelerator.wait_for_everyone()
    with removed_on_error(staging):
        accelerator.save_state(str(staging))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            make_readable(staging)
            # Written last, with every file's size: marks the checkpoint complete and lets damage be detected later.
            record = {"state": state.to_dict(), "files": _file_sizes(staging)}
            write_json(staging / STATE_FILE, record)
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
        fsync_dir(root)
        # One checkpoint per optimizer step: an epoch-end checkpoint supersedes a mid-epoch one of the same step.
        found = list_checkpoints(run_dir)
        same_step = [path for path in found if path != final and _step(path) == state.global_step]
        others = [path for path in found if path not in same_step]
        for stale in same_step + others[:-keep]:
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _step(folder: Path) -> int:
    return int(_NAME.match(folder.name).group(2))


def resolve_checkpoint(run_dir: Path, requested: str) -> Path:
    """``latest`` -> newest complete checkpoint of this run; otherwise the given folder, which must be complete."""
    if requested == "latest":
        found = list_checkpoints(run_dir)
        if not found:
            raise FileNotFoundError(
                f"resume_from_checkpoint=latest but {Path(run_dir) / CHECKPOINTS} holds no complete checkpoint "
                "yet: start the run again with --overwrite_output_dir instead of --resume_from_checkpoint"
            )
        return found[-1]
    path = Path(requested)
    problem = checkpoint_problem(path)
    if problem is not None:
        raise FileNotFoundError(f"{path} is not a usable checkpoint ({problem}); use another one or 'latest'")
    return path


def load_checkpoint(accelerator: Accelerator, path: Path) -> TrainState:
    """Restore model, optimizer, scheduler and RNG from ``path`` and return its :class:`TrainState`."""
    accelerator.load_state(str(path))
    return TrainState.from_dict(json.loads((path / STATE_FILE).read_text(encoding="utf-8"))["state"])


def remove_staging(run_dir: Path) -> None:
    """Delete what a killed run left half-written (staging folders are never read)."""
    run_dir = Path(run_dir)
    for leftover in [*run_dir.glob(".*.tmp"), *run_dir.glob(".*.old"), *(run_dir / CHECKPOINTS).glob(".tmp-*")]:
        if leftover.is_dir():
            logger.warning("Removing %s left by an interrupted run", leftover)
            shutil.rmtree(leftover)
