"""Evaluation metrics: the four macro metrics through `evaluate`, plus a per-class report and confusion matrix.

The metric itself is our own `evaluate` module (``metric_modules/sentiment_metrics``) loaded by local path, because
`evaluate.load("f1")` needs the Hub.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import evaluate

# `evaluate` and scikit-learn are imported where used: the argument parser reads METRIC_NAMES from here and must
# answer --help before heavy imports.
METRIC_PATH = str(Path(__file__).parent / "metric_modules" / "sentiment_metrics")
METRIC_NAMES: tuple[str, ...] = ("accuracy", "f1", "precision", "recall")


def load_metric(**kwargs) -> evaluate.EvaluationModule:
    """The sentiment metric module, loaded offline from inside the package."""
    import evaluate

    return evaluate.load(METRIC_PATH, **kwargs)


def compute_metrics(
    predictions: Sequence[int], references: Sequence[int], metric: evaluate.EvaluationModule | None = None
) -> dict[str, float]:
    """Accuracy and macro F1 / precision / recall of label ids."""
    metric = metric or load_metric()
    return metric.compute(predictions=list(map(int, predictions)), references=list(map(int, references)))


def per_class_report(
    predictions: Sequence[int], references: Sequence[int], label_names: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support for every label name (plus macro and weighted averages)."""
    from sklearn.metrics import classification_report

    report = classification_report(
        references,
        predictions,
        labels=list(range(len(label_names))),
        target_names=list(label_names),
        output_dict=True,
        zero_division=0,
    )
    report.pop("accuracy", None)  # duplicated in compute_metrics; only present for some inputs
    return report


def confusion(predictions: Sequence[int], references: Sequence[int], label_names: Sequence[str]) -> dict:
    """Confusion matrix keyed by names: ``matrix[gold][predicted]`` counts, rows in label order."""
    from sklearn.metrics import confusion_matrix

    matrix = confusion_matrix(references, predictions, labels=list(range(len(label_names))))
    return {
        "labels": list(label_names),
        "matrix": {
            gold: {pred: int(matrix[i, j]) for j, pred in enumerate(label_names)} for i, gold in enumerate(label_names)
        },
    }


def per_aspect_report(
    predictions: Sequence[int],
    references: Sequence[int],
    aspects: Sequence[str],
    label_names: Sequence[str],
    metric: evaluate.EvaluationModule | None = None,
) -> dict[str, dict]:
    """Each aspect's macro metrics and confusion matrix, from the (text, aspect) pairs of an aspect task in text-major
    order (text 0's aspects first): IndoNLU scores the pairs together; these say which aspect is weak."""
    metric = metric or load_metric()
    report = {}
    for index, aspect in enumerate(aspects):
        preds, refs = predictions[index :: len(aspects)], references[index :: len(aspects)]
        report[aspect] = {**compute_metrics(preds, refs, metric), "confusion": confusion(preds, refs, label_names)}
    return report


def confusion_array(confusion_dict: dict) -> np.ndarray:
    names = confusion_dict["labels"]
    return np.array([[confusion_dict["matrix"][gold][pred] for pred in names] for gold in names])


def pairs_from_confusion(counts: Sequence[Sequence[int]]) -> tuple[list[int], list[int]]:
    """The (predictions, references) that confusion ``counts[reference][prediction]`` stand for (for `evaluate`)."""
    predictions, references = [], []
    for reference, row in enumerate(counts):
        for prediction, count in enumerate(row):
            predictions += [prediction] * int(count)
            references += [reference] * int(count)
    return predictions, references
