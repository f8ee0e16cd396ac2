"""A sweep's folder and settings before any trial, and the extra workers ``--n_jobs`` starts on this machine.

The sweep folder records its settings in ``sweep.json`` on the first start (space, objective, direction, the base
recipe): the same command resumes the study, and a different space, objective or recipe is refused (settings that do
not change what a trial computes, like ``report_to``, may change, as for a resumed training run). ``sweep_recipe.yaml``
is the whole base recipe, which the extra workers read.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from hf_indosent.core.arguments import ArgumentError
from hf_indosent.core.files import write_atomic, write_json
from hf_indosent.experiments.arguments import SweepArguments
from hf_indosent.experiments.space import Param, describe
from hf_indosent.modeling.folders import existing_run_files
from hf_indosent.training.arguments import FineTuneArguments
from hf_indosent.training.run_folder import RESUMABLE

SETTINGS_FILE = "sweep.json"
RECIPE_FILE = "sweep_recipe.yaml"


def check_recipe(args: FineTuneArguments) -> None:
    """What a sweep refuses in its recipe (and how it is launched), before anything is written."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ArgumentError(
            "a sweep runs as one process (each trial one training process): start it without accelerate launch, "
            "and use --n_jobs for more workers"
        )
    if args.push_to_hub:
        raise ArgumentError(
            "push_to_hub: a sweep does not upload its trials; pass --push_to_hub false and push the best model after "
            "it: hf-indosent push --model OUTPUT_DIR/best"
        )
    if args.resume_from_checkpoint is not None:
        raise ArgumentError("resume_from_checkpoint: a sweep resumes its trials itself: run the same command again")


def check_sweep_folder(folder: Path) -> None:
    """Refuse a folder that holds a training run (the recipe's own output_dir, say), unless it is a sweep's (whose
    best/ is the best trial's model)."""
    existing = existing_run_files(folder)
    if existing and not (folder / SETTINGS_FILE).is_file():
        raise FileExistsError(
            f"output_dir {str(folder)!r} holds a training run ({', '.join(existing)}): a sweep needs a folder of its "
            "own for its trials, e.g. --output_dir outputs/sweep-<name>"
        )


def recipe_record(groups: Sequence[Any]) -> dict[str, Any]:
    """The base recipe as JSON values, without where it is written."""
    flat = {key: value for group in groups for key, value in dataclasses.asdict(group).items()}
    flat.pop("output_dir", None)
    return json.loads(json.dumps(flat))


def check_same_sweep(
    folder: Path, groups: Sequence[Any], params: Sequence[Param], args: SweepArguments, name: str
) -> None:
    """Refuse to resume the sweep in ``folder`` with other settings; record them on its first start."""
    settings = {
        "space": json.loads(json.dumps(describe(params))),
        "objective": args.objective,
        "direction": args.direction,
        "study_name": name,
        "recipe": recipe_record(groups),
    }
    path = folder / SETTINGS_FILE
    if path.is_file():
        recorded = json.loads(path.read_text(encoding="utf-8"))
        refused = [
            f"{key} {recorded.get(key)!r} -> {value!r}"
            for key, value in settings.items()
            if key != "recipe" and recorded.get(key) != value
        ]
        old_recipe = recorded.get("recipe", {})
        refused += [
            f"{key} {old_recipe.get(key)!r} -> {value!r}"
            for key, value in settings["recipe"].items()
            if key not in RESUMABLE and old_recipe.get(key, value) != value
        ]
        if refused:
            raise ArgumentError(
                f"the sweep in {str(folder)!r} was started with other settings ({'; '.join(refused)}): resume it with "
                f"the recorded ones ({SETTINGS_FILE}), or start a new sweep in another --output_dir"
            )
    write_json(path, settings)
    write_atomic(folder / RECIPE_FILE, yaml.safe_dump(settings["recipe"], sort_keys=False))


def worker_command(folder: Path, args: SweepArguments, seed: int) -> list[str]:
    """The command of one more worker on this machine: the same sweep, its recipe from the sweep folder."""
    parts = [sys.executable, "-m", "hf_indosent", "sweep", "--config", str(folder / RECIPE_FILE)]
    parts += ["--output_dir", str(folder)]
    for item in dataclasses.fields(SweepArguments):
        value = getattr(args, item.name)
        if item.name not in ("n_jobs", "sampler_seed") and value is not None:
            parts += [f"--{item.name}", str(value)]
    return [*parts, "--sampler_seed", str(seed), "--n_jobs", "1"]


def start_workers(folder: Path, args: SweepArguments, seed: int) -> tuple[list[subprocess.Popen], int]:
    """``--n_jobs`` - 1 more workers, each with its own sampler seed, output in ``worker-N.log``, and its share of
    the CPU threads; returns them and the threads this worker keeps."""
    threads = max(1, (os.cpu_count() or 1) // args.n_jobs)
    workers = []
    for index in range(1, args.n_jobs):
        with open(folder / f"worker-{index}.log", "a", encoding="utf-8") as log:
            workers.append(
                subprocess.Popen(
                    worker_command(folder, args, seed + index),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env={**os.environ, "OMP_NUM_THREADS": str(threads)},
                )
            )
    return workers, threads


def wait_for(workers: list[subprocess.Popen], stopping: bool) -> None:
    """Wait for the extra workers; when this one stops early, ask them to stop too (each saves its trial first)."""
    for worker in workers:
        if stopping and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    for worker in workers:
        worker.wait()
