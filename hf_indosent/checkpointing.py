"""Checkpoints that survive a crash at any moment.

A checkpoint is ``accelerator.save_state`` (model, optimizer, scheduler, RNG of every process) plus our
``train_state.json`` (epoch, step, best metric, early-stopping counter, history). It is written into a hidden
temporary folder and renamed into place only when complete, so a folder named ``checkpoint-*`` is always whole; a
folder without ``train_state.json`` (written last) is skipped with a warning. The best model is swapped in the same way.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from accelerate import Accelerator

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
STATE_FILE = "train_state.json"
_NAME = re.compile(r"^checkpoint-e(\d+)-s(\d+)$")


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
        default_factory=lambda: {"loss": 0.0, "batches": 0, "predictions": [], "references": []}
    )

    def to_json(self) -> str:
        data = asdict(self)
        data["best_metric"] = None if math.isinf(self.best_metric) else self.best_metric
        return json.dumps(data, indent=2)

    @classmethod
    def from_json(cls, text: str) -> TrainState:
        data = json.loads(text)
        data["best_metric"] = -math.inf if data["best_metric"] is None else data["best_metric"]
        return cls(**data)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` so that ``path`` holds either the old or the new content, never a torn file."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_dir(staging: Path, target: Path) -> None:
    """Move a finished ``staging`` folder to ``target``; the old ``target`` stays on disk until the new one is in."""
    old = target.with_name(f".{target.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    _fsync_dir(target.parent)
    if old.exists():
        shutil.rmtree(old)


def recover_dir(target: Path) -> None:
    """Undo a swap interrupted between its two renames: bring the previous folder back."""
    old = target.with_name(f".{target.name}.old")
    if not target.exists() and old.exists():
        logger.warning("Restoring %s from an interrupted update", target)
        os.replace(old, target)


def checkpoint_name(state: TrainState) -> str:
    return f"checkpoint-e{state.epoch:04d}-s{state.global_step:09d}"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first. Incomplete ones are reported and ignored."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    complete = []
    for folder in sorted(root.iterdir()):
        if not folder.is_dir() or not _NAME.match(folder.name):
            continue
        if (folder / STATE_FILE).is_file():
            complete.append(folder)
        else:
            logger.warning("Skipping incomplete checkpoint %s (no %s)", folder, STATE_FILE)
    return complete


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
    accelerator.save_state(str(staging))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_atomic(staging / STATE_FILE, state.to_json())  # last file written: marks the checkpoint complete
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
        _fsync_dir(root)
        for stale in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(stale)
    accelerator.wait_for_everyone()
    return final


def resolve_checkpoint(run_dir: Path, requested: str) -> Path:
    """``latest`` -> newest complete checkpoint of this run; otherwise the given folder, which must be complete."""
    if requested == "latest":
        found = list_checkpoints(run_dir)
        if not found:
            raise FileNotFoundError(
                f"resume_from_checkpoint=latest but {Path(run_dir) / CHECKPOINTS} holds no complete checkpoint; "
                "start without --resume_from_checkpoint"
            )
        return found[-1]
    path = Path(requested)
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no {STATE_FILE}); use another one or 'latest'")
    return path


def load_checkpoint(accelerator: Accelerator, path: Path) -> TrainState:
    """Restore model, optimizer, scheduler and RNG from ``path`` and return its :class:`TrainState`."""
    accelerator.load_state(str(path))
    return TrainState.from_json((path / STATE_FILE).read_text(encoding="utf-8"))
