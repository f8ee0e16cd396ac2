"""``hf-indosent sweep``'s own options (the recipe's are train's: ModelArguments, DataArguments, FineTuneArguments).

Light: no Optuna import (:func:`importlib.util.find_spec` says whether it is installed), so ``--help`` and a bad
option answer at once.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field

from hf_indosent.core.arguments import check, check_numbers
from hf_indosent.core.suggest import did_you_mean
from hf_indosent.metrics.scores import METRIC_NAMES

SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "none")
KEEP = ("all", "best")
SCORES = (*METRIC_NAMES, "loss")
OBJECTIVES: dict[str, tuple[str, ...] | None] = {
    "validation": SCORES,
    "test": SCORES,
    "calibration": ("temperature", "nll_before", "nll_after", "ece_before", "ece_after"),
    "validation_per_class": None,  # <label>.<precision|recall|f1|support>
    "best_epoch": (),
    "epochs_completed": (),
    "train_runtime_s": (),
    "train_samples_per_second": (),
}
"""metrics.json's numbers, by their first key: what may follow it (None: anything, () nothing)."""
MINIMIZED = ("loss", "ece", "nll", "runtime", "seconds")
"""An objective whose last part contains one of these is minimized unless --direction says otherwise."""


@dataclass
class SweepArguments:
    space: str | None = field(
        default=None,
        metadata={
            "help": "YAML file mapping recipe keys to what to try: {low: 5.0e-5, high: 3.0e-4, log: true}, "
            "{low: 2, high: 5} (integers for an integer key), {choices: [16, 32]}, or a fixed value "
            "(docs/experiments.md). Required."
        },
    )
    n_trials: int = field(
        default=20,
        metadata={
            "help": "Trials of the study in all, across runs of the command and workers (finished, pruned or "
            "failed by an error; an interrupted trial is retried, not counted). Raise it to extend a sweep."
        },
    )
    timeout: float | None = field(
        default=None, metadata={"help": "Seconds after which this worker starts no new trial (the current one ends)."}
    )
    objective: str = field(
        default="validation.f1",
        metadata={
            "help": "metrics.json value to optimize, as a dotted path: validation.f1 (macro F1 of the best epoch), "
            "validation.loss, test.f1 (labelled test split), calibration.ece_after, train_runtime_s, ..."
        },
    )
    direction: str | None = field(
        default=None,
        metadata={"help": "'maximize' or 'minimize'. Default: minimize losses, ECE, NLL and times, else maximize."},
    )
    sampler: str = field(default="tpe", metadata={"help": "'tpe' (Optuna's TPE) or 'random'."})
    sampler_seed: int | None = field(
        default=None,
        metadata={
            "help": "The sampler's seed. Default: the recipe's seed plus the number of trials the study holds when "
            "the worker starts (reproducible from scratch, new proposals when resumed). Give each worker started "
            "at the same moment its own."
        },
    )
    pruner: str = field(
        default="median",
        metadata={
            "help": "'median' (stop a trial whose validation metric after an epoch is worse than the median of "
            "earlier trials' after the same epoch) or 'none'. Fed from inside the training loop; validation.* "
            "objectives only."
        },
    )
    pruner_startup_trials: int = field(
        default=3, metadata={"help": "Trials that finish before the pruner may stop any."}
    )
    baseline_trial: bool = field(
        default=True,
        metadata={
            "help": "A new study's first trial runs the recipe's own values of the searched keys (those inside the "
            "space), so the table shows what the search gains over the recipe as it is."
        },
    )
    storage: str | None = field(
        default=None,
        metadata={
            "help": "Optuna storage URL. Default: sqlite:///OUTPUT_DIR/study.db, so the same command resumes. "
            "postgresql://... (or mysql://...) lets processes on several machines work on one study."
        },
    )
    study_name: str | None = field(default=None, metadata={"help": "Study name. Default: the sweep folder's name."})
    keep: str = field(
        default="all",
        metadata={
            "help": "'all': every trial stays an ordinary run folder; 'best': trials other than the best keep "
            "their metrics, logs and plots only (best/ and checkpoints/ deleted). Pruned trials are always deleted."
        },
    )
    n_jobs: int = field(
        default=1,
        metadata={
            "help": "Worker processes on this machine, each training one trial at a time on its share of the CPU "
            "threads (timings of parallel trials are not comparable)."
        },
    )
    heartbeat: int = field(
        default=60,
        metadata={
            "help": "Seconds between a worker's heartbeats in the storage: a trial whose worker stopped beating "
            "for twice that (a machine lost) is retried by another worker. 0: off (a crashed worker's trial on "
            "this machine is still found at once)."
        },
    )

    def __post_init__(self) -> None:
        check_numbers(self)
        check(bool(self.space), "space is required: pass --space SPACE.yaml (docs/experiments.md has the format)")
        check(
            os.path.isfile(self.space),
            f"space file {self.space!r} not found: pass the path of a YAML search space, e.g. "
            "configs/sweep-minilm-vocab-tapt.yaml",
        )
        check(
            importlib.util.find_spec("optuna") is not None,
            'the sweep needs Optuna, which is not installed: pip install "hf-indosent[sweep]"',
        )
        for name in ("n_trials", "n_jobs", "pruner_startup_trials"):
            value = getattr(self, name)
            minimum = 0 if name == "pruner_startup_trials" else 1
            check(isinstance(value, int) and value >= minimum, f"{name}={value!r} must be a whole number >= {minimum}")
        check(self.timeout is None or self.timeout > 0, f"timeout={self.timeout} must be > 0 seconds")
        check(self.heartbeat >= 0, f"heartbeat={self.heartbeat} must be >= 0 seconds (0 turns it off)")
        check(self.sampler in SAMPLERS, f"sampler={self.sampler!r} is unknown: use one of {list(SAMPLERS)}")
        check(self.pruner in PRUNERS, f"pruner={self.pruner!r} is unknown: use one of {list(PRUNERS)}")
        check(self.keep in KEEP, f"keep={self.keep!r} is unknown: use one of {list(KEEP)}")
        check(
            self.direction in (None, "maximize", "minimize"),
            f"direction={self.direction!r} is unknown: use 'maximize' or 'minimize'",
        )
        check_objective(self.objective)
        if self.direction is None:
            last = self.objective.split(".")[-1]
            self.direction = "minimize" if any(word in last for word in MINIMIZED) else "maximize"


def check_objective(objective: str) -> None:
    """An objective that metrics.json can hold, or an ArgumentError naming the nearest one."""
    parts = objective.split(".")
    known = [f"{root}.{name}" if names else root for root, names in OBJECTIVES.items() for name in (names or ("",))]
    follows = OBJECTIVES.get(parts[0], ())
    fits = parts[0] in OBJECTIVES and (
        (follows is None and len(parts) == 3)
        or (follows and len(parts) == 2 and parts[1] in follows)
        or (follows == () and len(parts) == 1)
    )
    check(
        fits and all(parts),
        f"objective={objective!r} is not a number metrics.json holds{did_you_mean(objective, known, quote=True)}: "
        "use e.g. validation.f1, validation.loss, test.f1, calibration.ece_after or "
        "validation_per_class.neutral.f1",
    )
