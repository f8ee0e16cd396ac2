"""The run folder (``output_dir``) of a training run: never two runs in it, never lost before the new run is sure.

Everything a new run needs is checked before an old run is touched (see :func:`hf_indosent.training.loop.setup`); this
module holds the folder's side of it: the lock, the "already holds a run" refusal, the free-space estimate, the
comparison of a resumed run's settings with the ones it started with, and ``args.json``, the record of what ran.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from hf_indosent.core.arguments import ArgumentError
from hf_indosent.core.files import write_json
from hf_indosent.core.folder_lock import LOCK_FILE as LOCK_FILE  # re-exported: a run folder's lock file
from hf_indosent.core.folder_lock import FolderLock, FolderLockedError
from hf_indosent.core.shell import resume_command
from hf_indosent.modeling.folders import ARGS_FILE, existing_run_files, remove_run_files
from hf_indosent.training.checkpoints import TrainState

RESUMABLE = frozenset(
    {
        "num_train_epochs",
        "early_stopping_patience",
        "logging_steps",
        "report_to",
        "checkpointing_steps",
        "checkpointing_minutes",
        "save_total_limit",
        "resume_from_checkpoint",
        "overwrite_output_dir",
        "push_to_hub",
        "hub_model_id",
        "hub_private",
        "dataloader_num_workers",
        "dataset_cache_dir",
        "output_dir",
        "calibrate",
    }
)
"""Settings a resumed run may change: they do not alter what the steps already taken computed."""
DEVICE_RESOLVED = frozenset({"micro_batches", "packing", "tf32"})
"""Training settings whose unset value resolves per device; args.json's ``launch`` records what they resolved to."""


class RunLock(FolderLock):
    """The lock of a run folder (:class:`~hf_indosent.core.folder_lock.FolderLock`), by default held by a training
    run."""

    def __init__(self, run_dir: Path, main_process: bool | None = None, job: str = "training run") -> None:
        super().__init__(run_dir, job=job, main_process=main_process)


def lock_run_dir(run_dir: Path, accelerator: Accelerator, job: str = "training run") -> FolderLock:
    """Take the run folder's lock on the main process; every process raises if it is taken (no process hangs).

    Use it as a context manager (``with lock_run_dir(...):``) or :meth:`~FolderLock.release` it."""
    lock = RunLock(run_dir, accelerator.is_main_process, job)
    problem: Exception | None = None
    try:
        lock.acquire()
    except OSError as err:  # FolderLockedError, or a folder that cannot be made
        problem = err
    if accelerator.num_processes > 1:
        shared = [None if problem is None else str(problem)]
        broadcast_object_list(shared, from_process=0)
        if problem is None and shared[0] is not None:
            problem = FolderLockedError(shared[0])
    if problem is not None:
        raise problem
    return lock


def check_output_dir(run_dir: Path, overwrite: bool, resuming: bool) -> None:
    """Refuse to mix two runs in one folder unless asked to overwrite (or to resume)."""
    existing = existing_run_files(run_dir)
    if existing and not overwrite and not resuming:
        raise FileExistsError(
            f"output_dir {str(run_dir)!r} already holds a run ({', '.join(existing)}). Pass --overwrite_output_dir "
            "to replace it, --resume_from_checkpoint latest to continue it, or choose another --output_dir."
        )


def check_overwrite_spares_inputs(run_dir: Path, inputs: dict[str, str | None]) -> None:
    """--overwrite_output_dir deletes the former run's files: refuse if the new run reads from them (its best/ model
    as the starting point, say), before anything is loaded or deleted."""
    for name in existing_run_files(run_dir):
        removed = (run_dir / name).resolve()
        for option, source in inputs.items():
            if source is not None and Path(source).exists() and Path(source).resolve().is_relative_to(removed):
                raise ValueError(
                    f"{option} {source!r} is in {str(run_dir / name)!r}, which --overwrite_output_dir would delete: "
                    "copy it elsewhere first, or choose another --output_dir"
                )


def replace_old_run(run_dir: Path, accelerator: Accelerator) -> None:
    """Delete the previous run's files: called only once everything the new run needs has been checked."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        remove_run_files(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()


def _folder_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())


def _gb(size: float) -> str:
    return f"{size / 1e9:.2f} GB"


def check_free_space(run_dir: Path, weight_bytes: int, keep: int, overwrite: bool) -> None:
    """Refuse to start when the disk cannot hold the run: best/ and ``keep`` checkpoints (weights + Adam state).

    A checkpoint holds the weights and Adam's two moments (about 3x the weights); while one is written, the oldest
    is still there, and while best/ is replaced, the old one is too. Files an overwrite will delete count as free.
    """
    need = weight_bytes * (3 * (keep + 1) + 2)
    existing = run_dir if run_dir.exists() else next(parent for parent in run_dir.parents if parent.exists())
    free = shutil.disk_usage(existing).free
    if overwrite and run_dir.is_dir():
        free += sum(_folder_bytes(run_dir / name) for name in existing_run_files(run_dir))
    if free < need:
        raise ArgumentError(
            f"not enough free space for this run in {str(run_dir)!r}: it needs about {_gb(need)} (best model and "
            f"{keep} checkpoint(s) of {_gb(3 * weight_bytes)} with optimizer state), {_gb(free)} are free. Free some "
            "space, lower --save_total_limit, or choose another --output_dir"
        )


def arguments_record(*groups: Any, launch: dict[str, Any]) -> dict[str, Any]:
    """What ``args.json`` holds: the model, data and training arguments as JSON values, and how it was launched."""
    names = ("model", "data", "training")
    record = {name: dataclasses.asdict(group) for name, group in zip(names, groups, strict=True)}
    record["launch"] = launch
    return json.loads(json.dumps(record))  # tuples become lists, as they read back


def recorded_launch(run_dir: Path) -> dict[str, Any]:
    """How the run in ``run_dir`` was launched (args.json's ``launch``), or {} for a run that recorded none."""
    path = run_dir / ARGS_FILE
    return json.loads(path.read_text(encoding="utf-8")).get("launch", {}) if path.is_file() else {}


def check_resume_arguments(run_dir: Path, record: dict[str, Any]) -> dict[str, list[Any]]:
    """Refuse to resume with settings that change what was computed; returns the honoured changes (old, new)."""
    path = run_dir / ARGS_FILE
    if not path.is_file():
        return {}
    recorded = json.loads(path.read_text(encoding="utf-8"))
    refused, honoured = [], {}
    for group in ("model", "data", "training", "launch"):
        for key, value in record.get(group, {}).items():
            old = recorded.get(group, {}).get(key, value)
            if old == value or key in ("resume_from_checkpoint", "overwrite_output_dir"):  # how, not what, it runs
                continue
            if group == "training" and key in DEVICE_RESOLVED:
                continue  # unset means "the device's default": compared as resolved, in the launch group
            if key in RESUMABLE:
                honoured[key] = [old, value]
            else:
                refused.append(f"{key} {old!r} -> {value!r}")
    if refused:
        raise ArgumentError(
            f"cannot resume {str(run_dir)!r} with different settings ({'; '.join(refused)}): the steps already "
            f"taken used the recorded ones ({ARGS_FILE}). Resume with the run's values, or start a new run "
            "(--overwrite_output_dir or another --output_dir)"
        )
    return honoured


def write_arguments(run_dir: Path, record: dict[str, Any], resumed_from: Path | None, changed: dict) -> None:
    """``args.json``: what this run uses now, and for every resume, its checkpoint and the settings it changed."""
    path = run_dir / ARGS_FILE
    resumes = []
    if resumed_from is not None and path.is_file():
        resumes = json.loads(path.read_text(encoding="utf-8")).get("resumes", [])
    if resumed_from is not None:
        resumes.append({"checkpoint": resumed_from.name, "changed": changed})
    write_json(path, {**record, "resumes": resumes})


def stopped_message(state: TrainState, path: Path) -> str:
    """What an interrupted run says: where its work is and the exact command that continues it."""
    return (
        f"stopped: checkpoint saved at epoch {state.epoch + 1}, step {state.global_step} ({path}). "
        f"Continue with: {resume_command()}"
    )
