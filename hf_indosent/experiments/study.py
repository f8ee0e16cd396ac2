"""The Optuna study behind a sweep: its storage, sampler and pruner, which trials count, and retries.

The study lives in an RDB storage (a SQLite file in the sweep folder by default), so every worker, in this process,
another one, or on another machine with a PostgreSQL URL, works on the same trials, and the same command resumes it.

A trial counts toward ``--n_trials`` once it is finished, pruned, or failed by an error of its own (a NaN loss). A
trial whose worker stopped (Ctrl-C) or died (a kill, a lost machine) does not count: it is marked failed and the same
parameters are queued again (:func:`retry`), and the retry resumes the stopped trial's run folder from its last
checkpoint when that folder is here. A dead worker on this machine is found at once (its process is gone, checked
before every trial); one elsewhere through Optuna's heartbeat, after twice ``--heartbeat`` without a beat.
"""

from __future__ import annotations

import logging
import os
import socket
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

logger = logging.getLogger(__name__)

STUDY_FILE = "study.db"
RUN_DIR = "run_dir"
"""User attributes of a trial: its run folder; its worker (host, pid); why it did not finish."""
WORKER, ERROR, STOPPED, RETRY_OF, PRUNED_AFTER = "worker", "error", "stopped", "retry_of", "pruned_after"
BASELINE = "baseline"


def storage_url(storage: str | None, sweep_dir: Path) -> str:
    return storage or f"sqlite:///{(Path(sweep_dir) / STUDY_FILE).resolve()}"


def open_study(
    url: str, name: str, direction: str, *, sampler: str, seed: int | None, base_seed: int, pruner: Any, heartbeat: int
) -> optuna.Study:
    """Create the study, or load it when the storage holds it (a resumed sweep, another worker)."""
    engine = {"connect_args": {"timeout": 300}} if url.startswith("sqlite") else {}  # wait for the other workers
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # the heartbeat's, since Optuna 2.9
        storage = optuna.storages.RDBStorage(
            url,
            engine_kwargs=engine,
            heartbeat_interval=heartbeat or None,
            grace_period=2 * heartbeat if heartbeat else None,
            heartbeat_stale_trial_callback=retry if heartbeat else None,
        )
    study = optuna.create_study(
        storage=storage, study_name=name, direction=direction, pruner=pruner, load_if_exists=True
    )
    if seed is None:
        seed = base_seed + len(study.get_trials(deepcopy=False))  # reproducible from scratch, new when resumed
    study.sampler = optuna.samplers.TPESampler(seed=seed) if sampler == "tpe" else optuna.samplers.RandomSampler(seed)
    return study


def make_pruner(name: str, startup_trials: int) -> optuna.pruners.BasePruner:
    if name == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=0)


def counts(trial: FrozenTrial) -> bool:
    """Whether ``trial`` uses one of ``--n_trials``: finished, pruned, or failed by an error of its own."""
    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        trial.state == TrialState.FAIL and ERROR in trial.user_attrs
    )


def trials_wanted(study: optuna.Study, n_trials: int) -> bool:
    """Whether a worker should start another trial: queued retries first, then until running and counted trials
    make ``n_trials``."""
    trials = study.get_trials(deepcopy=False)
    if any(trial.state == TrialState.WAITING for trial in trials):
        return True
    busy = sum(counts(trial) or trial.state == TrialState.RUNNING for trial in trials)
    return busy < n_trials


def this_worker() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child its parent has not waited for yet is a zombie: dead
        status = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
    except OSError:
        return True
    return "\nState:\tZ" not in status


def fail_lost_trials(study: optuna.Study, heartbeat: int) -> None:
    """Before a worker starts a trial: trials whose worker is gone are failed and queued again, those of this
    machine's dead processes at once, those of other machines once their heartbeat is late (``--heartbeat``)."""
    fail_dead_workers_trials(study)
    if heartbeat:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # calls retry() for each


def fail_dead_workers_trials(study: optuna.Study) -> list[int]:
    """Mark failed (and queue again) the running trials whose worker was a process of this machine that is gone.
    Returns their numbers."""
    found = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get(WORKER) or {}
        if worker.get("host") != socket.gethostname() or not worker.get("pid") or _alive(int(worker["pid"])):
            continue
        try:
            study._storage.set_trial_user_attr(trial._trial_id, STOPPED, "its worker died")
            if not study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:  # finished meanwhile (another worker got there first)
            continue
        logger.warning(
            "trial %d: its worker (process %s) is gone; its parameters are queued again", trial.number, worker["pid"]
        )
        retry(study, study._storage.get_trial(trial._trial_id))
        found.append(trial.number)
    return found


def retry(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue ``trial``'s parameters again (once), its run folder with them so the retry resumes it."""
    if any(other.user_attrs.get(RETRY_OF) == trial.number for other in study.get_trials(deepcopy=False)):
        return
    attrs = {RETRY_OF: trial.number}
    if trial.user_attrs.get(RUN_DIR):
        attrs[RUN_DIR] = trial.user_attrs[RUN_DIR]
    study.enqueue_trial(trial.params, user_attrs=attrs)


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best finished trial, or None before the first one."""
    try:
        return study.best_trial
    except ValueError:
        return None
