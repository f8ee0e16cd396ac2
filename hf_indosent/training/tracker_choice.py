"""Which experiment trackers a run reports to (``--report_to``), checked while the arguments are parsed.

Every tracker Accelerate supports, each an optional extra of this package; ``all`` (the installed ones) and ``none``.
Several at once: ``--report_to mlflow tensorboard``, ``--report_to mlflow,tensorboard`` or a YAML list. A tracker
that is not installed is refused here, in one line naming the extra that installs it, before anything is loaded.
Standard library only (:func:`importlib.util.find_spec`, no import of the trackers): ``--help`` and a refusal answer
at once. The trackers themselves run in :mod:`hf_indosent.training.trackers`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable

from hf_indosent.core.arguments import ArgumentError
from hf_indosent.core.suggest import did_you_mean

TRACKERS: dict[str, tuple[tuple[str, ...], str]] = {
    "tensorboard": (("tensorboard", "tensorboardX"), "tensorboard"),
    "mlflow": (("mlflow",), "mlflow"),
    "trackio": (("trackio",), "trackio"),
    "wandb": (("wandb",), "wandb"),
    "comet_ml": (("comet_ml",), "comet"),
    "aim": (("aim",), "aim"),
    "clearml": (("clearml",), "clearml"),
    "dvclive": (("dvclive",), "dvclive"),
    "swanlab": (("swanlab",), "swanlab"),
}
"""Accelerate's tracker name -> (the modules any one of which makes it installed, this package's extra for it)."""

REPORT_TO_HELP = (
    "Experiment trackers, through Accelerate: " + ", ".join(TRACKERS) + "; several at once (--report_to mlflow "
    "tensorboard, or mlflow,tensorboard, or a YAML list); 'all' (every installed one) or 'none'. Each logs the "
    "recipe, the step and epoch scalars of log.jsonl and the final metrics under the run folder's name "
    "(docs/experiments.md)."
)


def installed(name: str) -> bool:
    """Whether tracker ``name``'s package can be imported (found, not imported)."""
    return any(_found(module) for module in TRACKERS[name][0])


def _found(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def resolve_report_to(value: str | Iterable[str] | None) -> list[str]:
    """``--report_to`` as the list of tracker names to start ([] for none), each installed; an ArgumentError in one
    line otherwise (an unknown name with the closest one, a missing package with its extra)."""
    items = [value] if value is None or isinstance(value, str) else list(value)
    names = [part.strip().lower() for item in items for part in str(item or "none").split(",") if part.strip()]
    if not names or names == ["none"]:
        return []
    if "none" in names:
        raise ArgumentError(f"report_to={','.join(names)}: 'none' cannot be combined with trackers; drop one of them")
    unknown = [name for name in names if name not in TRACKERS and name != "all"]
    if unknown:
        raise ArgumentError(
            f"report_to: unknown tracker {', '.join(map(repr, unknown))}{did_you_mean(unknown, TRACKERS, quote=True)}"
            f"; use any of {', '.join(TRACKERS)}, 'all' or 'none'"
        )
    chosen: list[str] = []
    for name in names:
        if name == "all":
            chosen += [tracker for tracker in TRACKERS if installed(tracker)]
            continue
        if not installed(name):
            raise ArgumentError(
                f"report_to={name}: its package is not installed; install it with: pip install "
                f'"hf-indosent[{TRACKERS[name][1]}]"'
            )
        chosen.append(name)
    return list(dict.fromkeys(chosen))
