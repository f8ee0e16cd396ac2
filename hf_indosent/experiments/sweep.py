"""``hf-indosent sweep``: an Optuna study over a fine-tuning recipe, resumable, that hands back the best recipe.

    hf-indosent sweep --config configs/smsa-minilm-vocab-tapt.yaml --space configs/sweep-minilm-vocab-tapt.yaml \\
        --n_trials 20 --output_dir outputs/sweep-minilm

Every trial is an ordinary training run (:func:`hf_indosent.training.loop.train`) into ``OUTPUT_DIR/trial-NNNN``,
with the recipe, any command-line override and the trial's values from the space file
(:mod:`hf_indosent.experiments.space`). The pruner is fed each epoch's validation metric from inside the training
loop; a pruned trial stops there and its folder is deleted. The study is in a SQLite file in the sweep folder (or
``--storage``), so the same command continues a stopped or crashed sweep: finished trials are kept, the interrupted
one is retried from its last checkpoint (:mod:`hf_indosent.experiments.study`). After every trial the folder's
tables, best recipe and best model are brought up to date (:mod:`hf_indosent.experiments.report`).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import shutil
import signal
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from accelerate.state import AcceleratorState
from optuna.trial import TrialState

from hf_indosent.core.arguments import ArgumentError, RecipeError
from hf_indosent.core.errors import describe as describe_error
from hf_indosent.core.shell import command, rerun_command
from hf_indosent.core.stopping import Interrupted, StopRequests
from hf_indosent.data.arguments import DataArguments
from hf_indosent.experiments import report
from hf_indosent.experiments.arguments import SweepArguments
from hf_indosent.experiments.settings import check_recipe, check_same_sweep, check_sweep_folder, start_workers, wait_for
from hf_indosent.experiments.space import Param, apply, load_space, recipe_values
from hf_indosent.experiments.study import (
    BASELINE,
    ERROR,
    PRUNED_AFTER,
    RUN_DIR,
    STOPPED,
    WORKER,
    counts,
    fail_lost_trials,
    make_pruner,
    open_study,
    retry,
    storage_url,
    this_worker,
    trials_wanted,
)
from hf_indosent.training.arguments import FineTuneArguments, ModelArguments
from hf_indosent.training.checkpoints import list_checkpoints
from hf_indosent.training.loop import train
from hf_indosent.training.step import NonFiniteLossError

logger = logging.getLogger(__name__)

TRIAL_ERRORS = (ArgumentError, NonFiniteLossError, torch.OutOfMemoryError)
"""Errors of a trial's own values (a learning rate that diverges, a batch that does not fit): recorded as the trial's
failure, counted, and the sweep goes on. Any other error stops the sweep (the trial is retried when it resumes)."""


class TrialError(Exception):
    """A trial failed by an error of its own values (:data:`TRIAL_ERRORS`)."""


@dataclass
class Sweep:
    """One worker's view of the sweep."""

    folder: Path
    groups: list[Any]  # the base recipe: ModelArguments, DataArguments, FineTuneArguments
    params: list[Param]
    args: SweepArguments
    name: str
    study: optuna.Study | None = None
    stops: StopRequests | None = None  # this worker's stop signals between trials (a trial's own come first)

    def update(self, plots: bool = False) -> optuna.trial.FrozenTrial | None:
        return report.update(
            self.folder, self.study, self.groups, self.params, self.args.objective, keep=self.args.keep, plots=plots
        )


# ----------------------------------------------------------------------------------------------------------------
# One trial


def objective_value(results: dict[str, Any], objective: str, trial: int) -> float:
    value: Any = results
    for part in objective.split("."):
        if not isinstance(value, dict) or part not in value:
            raise RecipeError(
                f"objective {objective!r} is not in trial {trial}'s metrics.json (its keys: {sorted(results)}); a "
                "test.* objective needs a labelled test split"
            )
        value = value[part]
    return float(value)


def after_epoch_hook(sweep: Sweep, trial: optuna.Trial):
    """After each epoch (its checkpoint saved): stop if a signal came before the trial's training took over its
    signals, then report the validation metric to the pruner and stop the trial if it says so."""
    parts = sweep.args.objective.split(".")
    metric = parts[1] if len(parts) == 2 and parts[0] == "validation" else None

    def after_epoch(epoch: int, validation: dict[str, float]) -> None:
        if sweep.stops is not None and sweep.stops.signum is not None:
            raise Interrupted(sweep.stops.signum, f"stopped after epoch {epoch} (its checkpoint saved)")
        if metric is None:
            return
        trial.report(validation[metric], epoch)
        if trial.should_prune():
            trial.set_user_attr(PRUNED_AFTER, epoch)
            raise optuna.TrialPruned(f"validation {metric} {validation[metric]:.4f} after epoch {epoch}")

    return after_epoch


def run_trial(sweep: Sweep, trial: optuna.Trial) -> float:
    """Train the trial's recipe into its run folder (resuming it when a stopped attempt left a checkpoint)."""
    values = {param.name: param.suggest(trial) for param in sweep.params}
    run_dir = Path(trial.user_attrs.get(RUN_DIR) or sweep.folder / f"trial-{trial.number:04d}")
    resume = bool(list_checkpoints(run_dir))
    trial.set_user_attr(RUN_DIR, str(run_dir))
    trial.set_user_attr(WORKER, this_worker())
    model_args, data_args, args = apply(
        sweep.groups,
        {
            **values,
            "output_dir": str(run_dir),
            "overwrite_output_dir": not resume,
            "resume_from_checkpoint": "latest" if resume else None,
            "run_name": f"{sweep.name}-{run_dir.name}",
        },
    )
    AcceleratorState._reset_state(reset_partial_state=True)  # each trial its own Accelerator (its own precision)
    try:
        results = train(model_args, data_args, args, after_epoch=after_epoch_hook(sweep, trial))
    except optuna.TrialPruned:
        shutil.rmtree(run_dir, ignore_errors=True)  # a pruned trial frees its disk at once
        raise
    except TRIAL_ERRORS as err:
        trial.set_user_attr(ERROR, describe_error(err)[:500])
        raise TrialError(describe_error(err)) from err
    finally:
        gc.collect()
    trial.set_user_attr("epochs", results["epochs_completed"])
    return objective_value(results, sweep.args.objective, trial.number)


@contextlib.contextmanager
def heartbeat(sweep: Sweep, trial: optuna.Trial) -> Iterator[None]:
    """The trial's heartbeat in the storage while it runs (``--heartbeat``): how workers elsewhere know it is alive."""
    storage, interval = sweep.study._storage, sweep.args.heartbeat
    if not interval:
        yield
        return
    done = threading.Event()

    def beat() -> None:
        while not done.wait(interval):
            with contextlib.suppress(Exception):  # a storage hiccup must not kill the trial
                storage.record_heartbeat(trial._trial_id)

    storage.record_heartbeat(trial._trial_id)
    thread = threading.Thread(target=beat, name="sweep-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def one_trial(sweep: Sweep) -> None:
    """Ask the study for a trial (a queued retry first), run it, tell the study how it ended."""
    study = sweep.study
    with warnings.catch_warnings():  # a storage with a heartbeat is "supposed to be used with optimize()"
        warnings.filterwarnings("ignore", message="Heartbeat of storage")
        trial = study.ask()
    started = time.monotonic()
    with heartbeat(sweep, trial):
        try:
            value = run_trial(sweep, trial)
        except optuna.TrialPruned as pruned:
            study.tell(trial, state=TrialState.PRUNED)
            say(f"trial {trial.number} pruned ({pruned}); its folder is deleted")
        except TrialError as err:
            study.tell(trial, state=TrialState.FAIL)
            say(f"trial {trial.number} failed: {err} (counted; the sweep goes on)")
        except BaseException as err:  # a stop signal, or an error that stops the sweep: retried when it resumes
            why = f"{signal.Signals(err.signum).name}" if isinstance(err, Interrupted) else describe_error(err)
            with contextlib.suppress(Exception):
                trial.set_user_attr(STOPPED, why[:300])
                study.tell(trial, state=TrialState.FAIL)
                retry(study, study._storage.get_trial(trial._trial_id))
            raise
        else:
            study.tell(trial, value)
            best = study.best_trial
            say(
                f"trial {trial.number} finished in {(time.monotonic() - started) / 60:.1f} min: {sweep.args.objective} "
                f"{value:.4f} (best: trial {best.number}, {best.value:.4f})"
            )


def say(line: str) -> None:
    print(line, flush=True)


# ----------------------------------------------------------------------------------------------------------------
# The worker loop, and more workers


def sweep(
    model_args: ModelArguments, data_args: DataArguments, args: FineTuneArguments, sweep_args: SweepArguments
) -> dict[str, Any]:
    """Run (or resume) the sweep with this worker (and ``--n_jobs`` - 1 more); returns the best trial's summary."""
    check_recipe(args)
    groups = [model_args, data_args, args]
    params = load_space(sweep_args.space, groups)  # every space error, before anything is written
    folder = Path(args.output_dir)
    check_sweep_folder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = sweep_args.study_name or folder.resolve().name
    current = Sweep(folder, groups, params, sweep_args, name)
    with report.sweep_lock(folder):
        check_same_sweep(folder, groups, params, sweep_args, name)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = storage_url(sweep_args.storage, folder)
    current.study = open_study(
        url,
        name,
        sweep_args.direction,
        sampler=sweep_args.sampler,
        seed=sweep_args.sampler_seed,
        base_seed=args.seed,
        pruner=make_pruner(sweep_args.pruner, sweep_args.pruner_startup_trials),
        heartbeat=sweep_args.heartbeat,
    )
    with report.sweep_lock(folder):  # one baseline, however many workers start at once
        baseline = recipe_values(params, groups)
        if sweep_args.baseline_trial and baseline and not current.study.get_trials(deepcopy=False):
            current.study.enqueue_trial(baseline, user_attrs={BASELINE: True})
    seed = sweep_args.sampler_seed if sweep_args.sampler_seed is not None else args.seed
    workers: list = []
    if sweep_args.n_jobs > 1:
        workers, threads = start_workers(folder, sweep_args, seed + 1000)
        torch.set_num_threads(threads)
        say(f"{len(workers)} more worker(s) started, {threads} thread(s) each; their output: {folder}/worker-N.log")
    started, stopping = time.monotonic(), True
    try:
        with StopRequests() as current.stops:
            while True:
                if current.stops.signum is not None:
                    raise Interrupted(current.stops.signum, "")
                fail_lost_trials(current.study, sweep_args.heartbeat)
                if not trials_wanted(current.study, sweep_args.n_trials):
                    break
                if sweep_args.timeout and time.monotonic() - started >= sweep_args.timeout:
                    say(f"timeout: {sweep_args.timeout:g} s passed, no new trial started")
                    break
                one_trial(current)
                current.update()
        stopping = False
    except Interrupted as stop:
        raise Interrupted(
            stop.signum,
            f"sweep stopped: its trials and their checkpoints are saved in {folder}. Continue it with: "
            f"{rerun_command()}",
        ) from None
    finally:
        wait_for(workers, stopping)
        best = current.update(plots=True)
    return summarize(current, best, url)


def summarize(sweep: Sweep, best: optuna.trial.FrozenTrial | None, url: str) -> dict[str, Any]:
    trials = sweep.study.get_trials(deepcopy=False)
    states = {state: sum(t.state == state for t in trials) for state in (TrialState.COMPLETE, TrialState.PRUNED)}
    failed = sum(t.state == TrialState.FAIL and ERROR in t.user_attrs for t in trials)
    done = sum(counts(t) for t in trials)
    lines = [
        f"Sweep {sweep.name}: {done} of {sweep.args.n_trials} trial(s) done ({states[TrialState.COMPLETE]} finished, "
        f"{states[TrialState.PRUNED]} pruned, {failed} failed); study in {url}"
    ]
    if best is not None:
        values = ", ".join(
            f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}" for key, value in best.params.items()
        )
        lines += [
            f"Best: trial {best.number}, {sweep.args.objective} {best.value:.4f} ({values})",
            f"  recipe: {sweep.folder / report.BEST_RECIPE}   model: {sweep.folder / 'best'}   "
            f"table: {sweep.folder / 'trials.md'}",
            f"  train it again: {command('hf-indosent', 'train', '--config', sweep.folder / report.BEST_RECIPE)}",
        ]
    say("\n".join(lines))
    return {
        "done": done,
        "best_trial": None if best is None else best.number,
        "best_value": None if best is None else best.value,
        "best_params": None if best is None else best.params,
    }


def cli_run(
    model_args: ModelArguments, data_args: DataArguments, args: FineTuneArguments, sweep_args: SweepArguments
) -> int:
    """``hf-indosent sweep`` after argument parsing (errors become one line in :mod:`hf_indosent.cli`)."""
    sweep(model_args, data_args, args, sweep_args)
    return 0
