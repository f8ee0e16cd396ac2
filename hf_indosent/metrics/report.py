"""Metrics for people: one line of scores, and the confusion matrix as a picture."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from hf_indosent.metrics.scores import confusion_array


def metrics_to_string(metrics: Mapping[str, float]) -> str:
    """``ACC:0.9000 F1:0.8800 REC:0.8700 PRE:0.8900`` as the IndoNLU tutorial prints them."""
    return " ".join(f"{short}:{metrics[name]:.4f}" for name, short in _SHORT.items() if name in metrics)


def plot_confusion_matrix(confusion: Mapping[str, Any], path: Path, title: str = "Confusion matrix") -> Path:
    """Counts, shaded by share of the gold row (recall per label); rows = gold, columns = predicted, by name."""
    names = confusion["labels"]
    counts = confusion_array(confusion)
    shares = counts / counts.sum(axis=1, keepdims=True).clip(min=1)
    figure, axis = plt.subplots(figsize=(1.6 * len(names) + 2, 1.4 * len(names) + 1.5))
    image = axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    axis.set(
        xticks=range(len(names)),
        yticks=range(len(names)),
        xticklabels=names,
        yticklabels=names,
        xlabel="predicted",
        ylabel="gold",
        title=title,
    )
    for gold in range(len(names)):
        for predicted in range(len(names)):
            color = "white" if shares[gold, predicted] > 0.5 else "black"
            axis.text(predicted, gold, str(counts[gold, predicted]), ha="center", va="center", color=color)
    figure.colorbar(image, ax=axis, label="share of gold row")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)


_SHORT = {"accuracy": "ACC", "f1": "F1", "recall": "REC", "precision": "PRE"}
