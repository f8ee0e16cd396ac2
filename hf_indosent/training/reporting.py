"""What a run leaves for people: epoch lines in the tutorial's format, log.jsonl, metrics.json and plots."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt

from hf_indosent.core.files import write_atomic
from hf_indosent.core.shell import command
from hf_indosent.metrics.report import metrics_to_string

TRACKER_KEY = re.compile(r"[^/\w.\- :]")
"""What MLflow (the strictest tracker) refuses in a metric name."""


def start_summary(facts: Mapping[str, Any]) -> str:
    """What a run is about to do, printed once before the first step: model, data, steps, device, where it goes."""
    splits = " · ".join(f"{name} {count:,}" for name, count in facts["splits"].items())
    return "\n".join(
        [
            f"Training {facts['model']} ({facts['parameters'] / 1e6:.1f}M parameters) on labels "
            f"{', '.join(facts['labels'])}"
            + (
                f" for each of {len(facts['aspects'])} aspects ({', '.join(facts['aspects'])})"
                if facts.get("aspects")
                else ""
            ),
            f"  data: {splits}",
            f"  steps: {facts['steps_per_epoch']:,} per epoch x up to {facts['epochs']} epoch(s), batch "
            f"{facts['batch_size']} per process x {facts['processes']} process(es)",
            f"  device: {facts['device']}, {facts['threads']} CPU thread(s), precision {facts['precision']}"
            f"{' (TF32 matmuls)' if facts['tf32'] else ''}, "
            + (
                "packed batches (no padding)"
                if facts.get("packing")
                else f"{facts['micro_batches']} micro-batch(es) per batch"
            ),
            f"  run folder: {facts['run_dir']} (checkpoints every epoch{facts['checkpoint_every']})",
        ]
    )


def final_summary(run_dir: Path, results: Mapping[str, Any], minutes: float, data_dir: str | None = None) -> str:
    """The outcome and the next commands, ready to paste (quoted: a run folder may have spaces or accents in it).

    ``data_dir``: the run's ``--data_dir``, which evaluating it needs again (``None`` for the default download)."""
    metric = results["metric_for_best_model"]
    validation = results["validation"]
    run = Path(run_dir)
    data = ("--data_dir", data_dir) if data_dir else ()
    next_commands = [
        ("predict", "--model", run, "--texts", "makanan nya enak sekali ."),
        ("evaluate", "--model", run, "--split", "validation", *data, "--output_dir", run / "eval"),
        ("push", "--model", run, "--repo-id", "your-user/your-model"),
    ]
    return "\n".join(
        [
            f"Done in {minutes:.1f} min: best epoch {results['best_epoch']} of {results['epochs_completed']}, "
            f"validation {metric} {validation[metric]:.4f} ({metrics_to_string(validation)}).",
            f"Best model: {run / 'best'}   (metrics.json, log.jsonl and plots beside it)",
            "Next:",
            *(f"  {command('hf-indosent', *parts)}" for parts in next_commands),
        ]
    )


def write_log(path: Path, history: Sequence[Mapping[str, Any]]) -> None:
    """log.jsonl, one line per epoch, rewritten from the run state so a resumed run never duplicates lines."""
    write_atomic(Path(path), "".join(json.dumps(entry) + "\n" for entry in history))


def scalars(values: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers of a nested record as flat tracker keys joined with '/' (``validation/f1``); text, lists and None
    are left out, booleans become 0 or 1. Characters no tracker takes in a key (a label named ``a+b``) become '_'."""
    flat: dict[str, float] = {}
    for key, value in values.items():
        name = prefix + TRACKER_KEY.sub("_", str(key))
        if isinstance(value, Mapping):
            flat.update(scalars(value, f"{name}/"))
        elif isinstance(value, (bool, int, float)):
            flat[name] = int(value) if isinstance(value, bool) else value
    return flat


def epoch_scalars(entry: Mapping[str, Any]) -> dict[str, float]:
    """One log.jsonl line for the trackers: every number in it (``epoch``, ``lr``, ``validation/f1``,
    ``validation_per_class/neutral/recall``, ``is_best``...), its ``train`` group as ``train_epoch/...`` (the epoch's
    means, apart from the running ``train/loss`` logged every ``logging_steps``)."""
    renamed = {("train_epoch" if key == "train" else key): value for key, value in entry.items()}
    renamed.pop("global_step", None)  # the step the values are logged at
    return scalars(renamed)


def final_scalars(results: Mapping[str, Any]) -> dict[str, float]:
    """metrics.json's numbers for the trackers, as ``final/validation/f1``, ``final/test/f1``,
    ``final/calibration/ece_after``..."""
    return scalars(results, "final/")


def plot_training_curves(history: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Loss and macro F1 per epoch, train and validation."""
    epochs = [entry["epoch"] for entry in history]
    figure, (loss_ax, f1_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for split, style in (("train", "o-"), ("validation", "s--")):
        loss_ax.plot(epochs, [entry[split]["loss"] for entry in history], style, label=split)
        f1_ax.plot(epochs, [entry[split]["f1"] for entry in history], style, label=split)
    loss_ax.set(title="Loss", xlabel="epoch", ylabel="cross-entropy")
    f1_ax.set(title="Macro F1", xlabel="epoch", ylabel="F1", ylim=(0, 1))
    for axis in (loss_ax, f1_ax):
        axis.set_xticks(epochs)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
