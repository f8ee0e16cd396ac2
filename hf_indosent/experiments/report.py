"""What a sweep leaves in its folder, rewritten after every trial by whichever worker finished it (under a lock):

- ``trials.csv`` and ``trials.md``: every trial, its state, objective, parameters, epochs, time and run folder;
- ``best_recipe.yaml``: the best trial's recipe, which ``hf-indosent train --config`` takes as it is, and
  ``top_recipes/rank-N-trial-M.yaml``, the best three's (to confirm over seeds);
- ``best/``: a copy of the best trial's model; ``best_trial.json``: its number, value, parameters and folder;
- at the end of a worker, ``optimization_history.png`` and ``param_importances.png`` (Optuna's matplotlib plots).

With ``--keep best``, the other trials keep their metrics, logs and plots but lose their weights and checkpoints.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import fcntl
import io
import json
import logging
import os
import shutil
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt
import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from hf_indosent.core.files import staged_dir, write_atomic, write_json
from hf_indosent.core.shell import command
from hf_indosent.experiments.space import Param
from hf_indosent.experiments.study import BASELINE, ERROR, PRUNED_AFTER, RETRY_OF, RUN_DIR, STOPPED, best_trial
from hf_indosent.modeling.folders import BEST_DIR, CHECKPOINTS

logger = logging.getLogger(__name__)

LOCK_FILE = ".sweep.lock"
BEST_RECIPE = "best_recipe.yaml"
BEST_TRIAL = "best_trial.json"
TOP_RECIPES = "top_recipes"
TOP = 3
"""Recipes of the best trials kept in top_recipes/, to confirm over several seeds on the full data."""
NOT_IN_RECIPE = {
    "output_dir",
    "overwrite_output_dir",
    "resume_from_checkpoint",
    "push_to_hub",
    "hub_model_id",
    "hub_private",
    "run_name",
}
"""Where and how a trial ran, not what it computed: left out of best_recipe.yaml (output_dir is set anew)."""


@contextlib.contextmanager
def sweep_lock(sweep_dir: Path) -> Iterator[None]:
    """Held while the sweep's shared files are written: workers take turns (it waits, unlike a run folder's lock)."""
    fd = os.open(Path(sweep_dir) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def note(trial: FrozenTrial, retries: dict[int, int]) -> str:
    attrs = trial.user_attrs
    parts = ["the recipe's own values"] if attrs.get(BASELINE) else []
    if RETRY_OF in attrs:
        parts.append(f"retry of trial {attrs[RETRY_OF]}")
    if trial.state == TrialState.PRUNED:
        parts.append(f"pruned after epoch {attrs.get(PRUNED_AFTER, '?')}")
    if ERROR in attrs:
        parts.append(f"error: {attrs[ERROR]}")
    if STOPPED in attrs:
        parts.append(f"stopped: {attrs[STOPPED]}")
    elif trial.state == TrialState.FAIL and ERROR not in attrs:
        parts.append("its worker was lost (no heartbeat)")
    if trial.number in retries:
        parts.append(f"retried as trial {retries[trial.number]}")
    return "; ".join(parts)


def trial_rows(trials: Sequence[FrozenTrial], params: Sequence[Param], objective: str) -> list[dict[str, Any]]:
    retries = {t.user_attrs[RETRY_OF]: t.number for t in trials if RETRY_OF in t.user_attrs}
    searched = [param.name for param in params if param.kind != "fixed"]
    rows = []
    for trial in trials:
        minutes = trial.duration.total_seconds() / 60 if trial.duration else None
        rows.append(
            {
                "trial": trial.number,
                "state": trial.state.name.lower(),
                objective: trial.value,
                **{name: trial.params.get(name) for name in searched},
                "epochs": trial.user_attrs.get("epochs", trial.user_attrs.get(PRUNED_AFTER)),
                "minutes": None if minutes is None else round(minutes, 2),
                "run_folder": Path(trial.user_attrs[RUN_DIR]).name if RUN_DIR in trial.user_attrs else None,
                "note": note(trial, retries),
            }
        )
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value).replace("|", "\\|")


def write_tables(sweep_dir: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    columns = list(rows[0])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: "" if value is None else value for key, value in row.items()} for row in rows)
    write_atomic(sweep_dir / "trials.csv", buffer.getvalue())
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row[column]) for column in columns) + " |" for row in rows]
    write_atomic(sweep_dir / "trials.md", "\n".join(lines) + "\n")


def best_recipe(groups: Sequence[Any], values: dict[str, Any], output_dir: str) -> dict[str, Any]:
    """The recipe of a trial as ``train --config`` takes it: the base recipe's settings that differ from the
    defaults, the trial's values, and its own ``output_dir``."""
    recipe: dict[str, Any] = {}
    for group in groups:
        for item in dataclasses.fields(group):
            value = getattr(group, item.name)
            if item.name in NOT_IN_RECIPE:
                continue
            default = item.default_factory() if item.default_factory is not dataclasses.MISSING else item.default
            if item.name == "report_to":
                default, value = [], value or []
            if value != default or item.name in values:
                recipe[item.name] = values.get(item.name, value)
    recipe["output_dir"] = output_dir
    return recipe


def write_recipe(
    path: Path, trial: FrozenTrial, groups: Sequence[Any], params: Sequence[Param], objective: str, output_dir: str
) -> None:
    """A trial's recipe as YAML at ``path``, with a header that says where it comes from and how to train it."""
    values = {**{p.name: p.value for p in params if p.kind == "fixed"}, **trial.params}
    header = (
        f"# Trial {trial.number} of a sweep ({objective} = {trial.value:.6g}, trials.md beside it has the others).\n"
        f"# Train it (again, or over several seeds) with:\n#   {command('hf-indosent', 'train', '--config', path)}\n"
    )
    recipe = yaml.safe_dump(best_recipe(groups, values, output_dir), sort_keys=False, allow_unicode=True)
    write_atomic(path, header + recipe)


def write_best(
    sweep_dir: Path, study: optuna.Study, groups: Sequence[Any], params: Sequence[Param], objective: str
) -> FrozenTrial | None:
    """best_recipe.yaml, best_trial.json and best/ for the study's best trial (best/ copied only when it changed),
    and the recipes of the best :data:`TOP` trials in top_recipes/."""
    best = best_trial(study)
    if best is None:
        return None
    write_recipe(sweep_dir / BEST_RECIPE, best, groups, params, objective, f"{sweep_dir}-best")
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    top = sorted(finished, key=lambda trial: trial.value, reverse=maximize)[:TOP]
    folder = sweep_dir / TOP_RECIPES
    folder.mkdir(exist_ok=True)
    names = [f"rank-{rank}-trial-{trial.number:04d}.yaml" for rank, trial in enumerate(top, 1)]
    for name, trial in zip(names, top, strict=True):
        write_recipe(folder / name, trial, groups, params, objective, f"{sweep_dir}-trial-{trial.number:04d}")
    for stale in folder.glob("*.yaml"):
        if stale.name not in names:
            stale.unlink()
    run_dir = Path(best.user_attrs.get(RUN_DIR, ""))
    previous = json.loads((sweep_dir / BEST_TRIAL).read_text()) if (sweep_dir / BEST_TRIAL).is_file() else {}
    changed = previous.get("trial") != best.number or not (sweep_dir / BEST_DIR).is_dir()
    if changed and (run_dir / BEST_DIR).is_dir():
        with staged_dir(sweep_dir / BEST_DIR) as staging:
            shutil.copytree(run_dir / BEST_DIR, staging, dirs_exist_ok=True)
    summary = {"trial": best.number, objective: best.value, "params": best.params, "run_dir": str(run_dir)}
    write_json(sweep_dir / BEST_TRIAL, summary)
    return best


def drop_weights(study: optuna.Study, best: FrozenTrial | None) -> None:
    """``--keep best``: finished trials other than the best lose best/ and checkpoints/ (metrics and logs stay)."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if best is not None and trial.number == best.number:
            continue
        run_dir = Path(trial.user_attrs.get(RUN_DIR, ""))
        if best is not None and run_dir == Path(best.user_attrs.get(RUN_DIR, "")):
            continue
        for name in (BEST_DIR, CHECKPOINTS):
            shutil.rmtree(run_dir / name, ignore_errors=True)


def write_plots(sweep_dir: Path, study: optuna.Study) -> list[str]:
    """Objective over trials and parameter importances (needs two finished trials; fANOVA on scikit-learn)."""
    written: list[str] = []
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return written
    plots = {
        "optimization_history.png": optuna.visualization.matplotlib.plot_optimization_history,
        "param_importances.png": optuna.visualization.matplotlib.plot_param_importances,
    }
    for name, plot in plots.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna's matplotlib plots are marked experimental
                axes = plot(study)
            figure = axes.figure
            figure.set_size_inches(8, 5)
            figure.tight_layout()
            figure.savefig(sweep_dir / name, dpi=110)
            plt.close(figure)
            written.append(name)
        except (ValueError, RuntimeError, ZeroDivisionError) as err:  # too few finished trials to plot
            logger.info("no %s yet: %s", name, err)
    return written


def update(
    sweep_dir: Path,
    study: optuna.Study,
    groups: Sequence[Any],
    params: Sequence[Param],
    objective: str,
    *,
    keep: str,
    plots: bool = False,
) -> FrozenTrial | None:
    """Rewrite the sweep's shared files from the study (every worker does, after each of its trials)."""
    with sweep_lock(sweep_dir):
        trials = study.get_trials(deepcopy=False)
        write_tables(sweep_dir, trial_rows(trials, params, objective))
        best = write_best(sweep_dir, study, groups, params, objective)
        if keep == "best":
            drop_weights(study, best)
        if plots:
            write_plots(sweep_dir, study)
    return best
