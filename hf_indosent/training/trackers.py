"""Experiment trackers (``--report_to``) through Accelerate's own integrations, never able to stop a run.

Each tracker is Accelerate's own class (``accelerate.tracking.LOGGER_TYPE_TO_CLASS``), built with what its
``init_trackers`` would pass plus the run's name and, when a run resumes, the id of the tracker run it continues;
each is wrapped in :class:`GuardedTracker` and handed to ``Accelerator(log_with=...)``, so ``init_trackers``,
``accelerator.log`` and ``end_training`` drive them as usual. The guard is the one mechanism that keeps a tracker's
failure (its server gone, its disk full) from costing the run: the failure is one warning, that tracker is switched off
for the rest of the run, and training and the run's own files (log.jsonl, metrics.json) go on.

What is logged: the resolved recipe as hyperparameters (:func:`hyperparameters`), every scalar of log.jsonl (per step
``train/loss`` and ``train/lr``, per epoch :func:`~hf_indosent.training.reporting.epoch_scalars`) and the final
metrics (``final/...``). Resumed runs continue the same tracker run where the tracker allows it: the ids are kept in
the run folder's ``trackers.json`` (MLflow's run id, W&B's run id, Aim's run hash); trackio resumes the run of the same
name, TensorBoard adds event files to the same folder, DVCLive resumes its folder.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from accelerate.tracking import LOGGER_TYPE_TO_CLASS, GeneralTracker

from hf_indosent.core.files import write_json

logger = logging.getLogger(__name__)

TRACKER_FILE = "trackers.json"
"""In a run folder: per tracker, the arguments that continue its tracker run when the run resumes."""


def tracker_arguments(
    name: str, project: str, run_name: str, logging_dir: Path, resume: Mapping[str, Any] | None
) -> tuple[str, dict[str, Any]]:
    """(first positional argument, keyword arguments) for Accelerate's tracker class ``name``.

    Accelerate passes the project name first to every class; what that means differs (a project, an MLflow
    experiment, TensorBoard's sub-folder, Aim's run name), hence the table. ``resume``: what ``trackers.json``
    recorded for this tracker when the run resumes (None for a new run)."""
    resume = None if resume is None else dict(resume)
    if name == "tensorboard":
        return run_name, {}  # events in runs/<run name>/; a resumed run adds files to the same folder
    if name == "mlflow":
        return project, {"run_name": run_name, **(resume or {})}  # run_id
    if name == "trackio":
        return project, {"name": run_name, "resume": "allow" if resume is not None else "never"}
    if name == "wandb":
        again = {"id": resume["id"], "resume": "allow"} if resume and "id" in resume else {}
        return project, {"name": run_name, "dir": str(logging_dir), **again}
    if name == "aim":
        return run_name, {"experiment": project, **(resume or {})}  # run_hash
    if name == "clearml":
        return project, {"task_name": run_name}
    if name == "dvclive":
        return run_name, {"dir": str(logging_dir / "dvclive"), "resume": resume is not None}
    if name == "swanlab":
        return project, {"experiment_name": run_name}
    return project, {}  # comet_ml: named after start (GuardedTracker.start)


def resume_arguments(name: str, tracker: GeneralTracker) -> dict[str, Any]:
    """What continues ``tracker``'s run later (recorded in trackers.json), read from the started tracker."""
    if name == "mlflow":
        return {"run_id": tracker.active_run.info.run_id}
    if name == "wandb":
        return {"id": tracker.run.id}
    if name == "aim":
        return {"run_hash": tracker.writer.hash}
    return {}


def mlflow_new_params(tracker: GeneralTracker, values: Mapping[str, Any]) -> dict[str, Any]:
    """MLflow refuses to change a parameter its run holds: a resumed run with a changed setting (more epochs) logs it
    as ``resumed/<key>`` instead (args.json's ``resumes`` has the full story)."""
    logged = tracker.active_run.data.params
    kept = {}
    for key, value in values.items():
        if logged.get(key) in (None, str(value)):
            kept[key] = value
        elif logged.get(f"resumed/{key}") in (None, str(value)):
            kept[f"resumed/{key}"] = value
    return kept


class GuardedTracker(GeneralTracker):
    """One of Accelerate's trackers whose every call is guarded: an exception is one warning and switches the tracker
    off for the rest of the run (a gone server would otherwise make every later step wait for its retries)."""

    requires_logging_directory = False  # the inner tracker has its folder already

    def __init__(self, inner: GeneralTracker, run_name: str) -> None:
        self.inner = inner
        self.name = inner.name
        self.main_process_only = inner.main_process_only
        self.run_name = run_name
        self.failed: str | None = None
        super().__init__()

    @property
    def tracker(self) -> Any:
        return self.inner.tracker

    def _guarded(self, doing: str, call, *args: Any, **kwargs: Any) -> Any:
        if self.failed is not None:
            return None
        try:
            return call(*args, **kwargs)
        except Exception as err:
            self.failed = f"{type(err).__name__}: {' '.join(str(err).split())}"[:300]
            logger.warning(
                "tracker %s failed while %s (%s): it is off for the rest of this run; training goes on, and "
                "log.jsonl and metrics.json keep everything",
                self.name,
                doing,
                self.failed,
            )
            return None

    def start(self) -> None:
        self._guarded("starting", self.inner.start)
        if self.name == "comet_ml" and self.failed is None:
            self._guarded("naming the run", lambda: self.inner.writer.set_name(self.run_name))

    def store_init_configuration(self, values: dict) -> None:
        if self.name == "mlflow" and self.failed is None:
            values = self._guarded("reading the resumed run", mlflow_new_params, self.inner, values)
        if values is not None:
            self._guarded("logging the hyperparameters", self.inner.store_init_configuration, values)

    def log(self, values: dict, step: int | None = None, **kwargs: Any) -> None:
        self._guarded("logging", self.inner.log, values, step=step, **kwargs)

    def finish(self) -> None:
        if self.failed is None:
            self._guarded("finishing", self.inner.finish)
            return
        try:  # switched off after it started: still close its run (MLflow would end it at exit, elsewhere)
            self.inner.finish()
        except Exception as err:
            logger.debug("tracker %s could not finish either: %s", self.name, err)

    def resume_arguments(self) -> dict[str, Any] | None:
        """What continues this tracker's run later, or None when it did not start."""
        if self.failed is not None:
            return None
        try:
            return resume_arguments(self.name, self.inner)
        except AttributeError:  # not started on this process
            return None


def build_trackers(
    names: Iterable[str],
    *,
    project: str,
    run_name: str,
    logging_dir: Path,
    recorded: Mapping[str, Any] | None = None,
) -> list[GuardedTracker]:
    """Accelerate's trackers ``names``, guarded, for ``Accelerator(log_with=...)``. ``recorded``: trackers.json of
    the run being resumed (None for a new run): a tracker found there continues its tracker run."""
    trackers = []
    for name in names:
        resume = None if recorded is None else recorded.get(name)
        first, kwargs = tracker_arguments(name, project, run_name, logging_dir, resume)
        cls = LOGGER_TYPE_TO_CLASS[name]
        inner = cls(first, str(logging_dir), **kwargs) if cls.requires_logging_directory else cls(first, **kwargs)
        trackers.append(GuardedTracker(inner, run_name))
    return trackers


def recorded_trackers(folder: Path) -> dict[str, Any]:
    """trackers.json of ``folder`` ({} when there is none, or it cannot be read)."""
    try:
        recorded = json.loads((Path(folder) / TRACKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return recorded if isinstance(recorded, dict) else {}


def run_name_of(folder: str | Path, run_name: str | None) -> str:
    """The run's name in the trackers: ``run_name``, else the run folder's name."""
    return run_name or Path(folder).resolve().name


def start_trackers(
    accelerator: Accelerator, project: str, config: Mapping[str, Any], record_in: Path | None = None
) -> None:
    """Start the Accelerator's trackers with ``config`` as hyperparameters; ``record_in``: the run folder whose
    trackers.json keeps what continues each tracker run (kept from earlier starts, updated with this one's)."""
    if not accelerator.log_with:
        return
    accelerator.init_trackers(project, config=dict(config))
    if record_in is None or not accelerator.is_main_process:
        return
    started = {
        tracker.name: arguments
        for tracker in accelerator.trackers
        if isinstance(tracker, GuardedTracker) and (arguments := tracker.resume_arguments()) is not None
    }
    if started:
        write_json(Path(record_in) / TRACKER_FILE, {**recorded_trackers(record_in), **started})


def finish_trackers(accelerator: Accelerator) -> None:
    """Finish the trackers without ending the process group (adaptation, followed by fine-tuning in one process)."""
    for tracker in accelerator.trackers:
        tracker.finish()
    accelerator.trackers.clear()


def hyperparameters(*groups: Any, launch: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The resolved recipe (argument dataclasses) and how it was launched, as flat scalar hyperparameters: lists
    joined with commas, None and other values as text (what every tracker takes)."""
    flat: dict[str, Any] = {}
    for group in groups:
        flat.update(dataclasses.asdict(group))
    for how in ("resume_from_checkpoint", "overwrite_output_dir"):  # how the run started, not what it computes
        flat.pop(how, None)
    flat.update({f"launch/{key}": value for key, value in (launch or {}).items()})
    return {key: _scalar(value) for key, value in flat.items()}


def _scalar(value: Any) -> Any:
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return ",".join(str(item) for item in value)
    return str(value)
