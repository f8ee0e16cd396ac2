"""Our `evaluate` module against scikit-learn, offline."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from hf_indosent.metrics.scores import compute_metrics, confusion, load_metric, per_class_report

NAMES = ["positive", "neutral", "negative"]


@pytest.fixture(scope="module")
def metric():
    return load_metric()


@settings(max_examples=60, deadline=None)
@given(pairs=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2)), min_size=1, max_size=200))
def test_macro_metrics_match_sklearn(pairs, metric):
    predictions, references = map(list, zip(*pairs, strict=True))
    result = compute_metrics(predictions, references, metric)
    assert set(result) == {"accuracy", "f1", "precision", "recall"}
    assert result["accuracy"] == pytest.approx(accuracy_score(references, predictions))
    for name, function in [("f1", f1_score), ("precision", precision_score), ("recall", recall_score)]:
        assert result[name] == pytest.approx(function(references, predictions, average="macro", zero_division=0))


def test_metric_accumulates_batches_like_one_call(metric):
    rng = np.random.default_rng(0)
    predictions, references = rng.integers(0, 3, 500), rng.integers(0, 3, 500)
    for start in range(0, 500, 64):
        metric.add_batch(predictions=predictions[start : start + 64], references=references[start : start + 64])
    assert metric.compute() == compute_metrics(predictions, references, metric)


def test_per_class_report_and_confusion_use_names():
    predictions, references = [0, 1, 2, 2, 0], [0, 1, 1, 2, 2]
    report = per_class_report(predictions, references, NAMES)
    assert report["neutral"] == {"precision": 1.0, "recall": 0.5, "f1-score": pytest.approx(2 / 3), "support": 2.0}
    assert report["macro avg"]["f1-score"] == pytest.approx(compute_metrics(predictions, references)["f1"])
    matrix = confusion(predictions, references, NAMES)
    assert matrix["labels"] == NAMES
    assert matrix["matrix"]["negative"] == {"positive": 1, "neutral": 0, "negative": 1}
    assert sum(sum(row.values()) for row in matrix["matrix"].values()) == 5
