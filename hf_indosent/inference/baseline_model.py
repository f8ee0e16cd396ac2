"""The TF-IDF baseline's model: features, one logistic regression per head, the C search, and scoring.

A single-label task (SmSA, EmoT) has one head, a multinomial logistic regression. An aspect task (CASA, HoASA) has one
per aspect over the same features (scikit-learn's ``MultiOutputClassifier``), each fitted on that aspect's labels, and
is scored as IndoNLU scores it: macro metrics over every (text, aspect) pair, flattened text-major, with each
aspect's figures beside them (:func:`hf_indosent.metrics.scores.per_aspect_report`).

A head only knows the labels its training rows hold (HoASA's ``neg_pos`` appears 9 times in 2,283 reviews, never for
some aspects), so its probabilities are placed by label id (:func:`label_probabilities`): a label it never saw gets
probability 0 and is never predicted, which :func:`unseen_labels` reports.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import datasets
import numpy as np
from evaluate import EvaluationModule
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.multioutput import MultiOutputClassifier
from sklearn.pipeline import FeatureUnion, Pipeline

from hf_indosent.data.builders import label_columns
from hf_indosent.inference.arguments import BASELINE_C_GRID, BaselineArguments
from hf_indosent.metrics.scores import compute_metrics, confusion, per_aspect_report, per_class_report

logger = logging.getLogger(__name__)

MAX_ITER = 1000


def build_features(max_features: int | None = None) -> FeatureUnion:
    """Word 1-2-grams and char_wb 2-5-grams, TF-IDF with sublinear tf; n-grams of a single text are noise, dropped."""
    settings = {"sublinear_tf": True, "min_df": 2, "max_features": max_features}
    return FeatureUnion(
        [
            ("word", TfidfVectorizer(analyzer="word", ngram_range=(1, 2), **settings)),
            ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), **settings)),
        ]
    )


def build_classifier(C: float, seed: int, aspects: bool) -> LogisticRegression | MultiOutputClassifier:
    """One logistic regression, or one per aspect (each fitted on its own column of labels)."""
    regression = LogisticRegression(C=C, solver="saga", max_iter=MAX_ITER, random_state=seed)
    return MultiOutputClassifier(regression) if aspects else regression


def heads(classifier: LogisticRegression | MultiOutputClassifier) -> list[LogisticRegression]:
    """The fitted logistic regressions of a classifier, in aspect order: itself, or one per aspect."""
    return list(classifier.estimators_) if isinstance(classifier, MultiOutputClassifier) else [classifier]


def aspects_of(dataset: datasets.Dataset) -> tuple[str, ...]:
    """An aspect task's aspects (its label columns); empty for one ``label`` per text."""
    columns = label_columns(dataset)
    return () if columns == ["label"] else tuple(columns)


def dataset_label_names(dataset: datasets.Dataset) -> list[str]:
    """The label names of every head (every aspect has the same)."""
    return dataset.features[label_columns(dataset)[0]].names


def targets(dataset: datasets.Dataset) -> np.ndarray:
    """Label ids: ``(texts,)`` for one label per text, ``(texts, aspects)`` for an aspect task (row-major, so
    ``.reshape(-1)`` gives the (text, aspect) pairs text-major)."""
    columns = label_columns(dataset)
    if columns == ["label"]:
        return np.asarray(dataset["label"])
    return np.column_stack([dataset[column] for column in columns])


def check_training_labels(train: datasets.Dataset) -> None:
    """Refuse what logistic regression cannot learn: a single-label task's label without training rows, an aspect
    with fewer than two labels. An aspect missing a rare label is fitted without it (see the module docstring)."""
    names = dataset_label_names(train)
    aspects = aspects_of(train)
    if not aspects:
        present = set(train["label"])
        missing = [name for index, name in enumerate(names) if index not in present]
        if missing:
            raise ValueError(
                f"the training split has no rows labelled {missing}: the baseline cannot learn them; add examples, "
                "or raise --max_train_samples"
            )
        return
    for aspect in aspects:
        present = sorted(set(train[aspect]))
        if len(present) < 2:
            raise ValueError(
                f"every training row of aspect {aspect!r} is labelled {[names[i] for i in present]}: logistic "
                "regression needs two labels per aspect; add examples, or raise --max_train_samples"
            )


def label_probabilities(
    classifier: LogisticRegression | MultiOutputClassifier, features: Any, num_labels: int
) -> np.ndarray:
    """``(texts, heads, num_labels)`` probabilities by label id; a label a head never saw in training gets 0."""
    regressions = heads(classifier)
    probabilities = np.zeros((features.shape[0], len(regressions), num_labels))
    for index, regression in enumerate(regressions):
        probabilities[:, index, regression.classes_] = regression.predict_proba(features)
    return probabilities


def pipeline_probabilities(pipeline: Pipeline, texts: Sequence[str], num_labels: int) -> np.ndarray:
    """:func:`label_probabilities` of a fitted baseline pipeline on raw texts."""
    features = pipeline.named_steps["features"].transform(texts)
    return label_probabilities(pipeline.named_steps["classifier"], features, num_labels)


def unseen_labels(pipeline: Pipeline, aspects: Sequence[str], label_names: Sequence[str]) -> dict[str, list[str]]:
    """Aspect -> the labels its head never saw in training (so never predicts); aspects that saw all are left out."""
    unseen = {}
    for aspect, regression in zip(aspects, heads(pipeline.named_steps["classifier"]), strict=True):
        seen = set(regression.classes_.tolist())
        missing = [name for index, name in enumerate(label_names) if index not in seen]
        if missing:
            unseen[aspect] = missing
    return unseen


def fit_baseline(
    train: datasets.Dataset, validation: datasets.Dataset, args: BaselineArguments, metric: EvaluationModule
) -> tuple[Pipeline, dict[str, float]]:
    """The fitted pipeline and, when C was searched, validation macro F1 by C (``{"0.3": f1, ...}``); for an aspect
    task that F1 is over every (text, aspect) pair, as IndoNLU scores it. One C serves every aspect."""
    check_training_labels(train)
    aspects = bool(aspects_of(train))
    features = build_features(args.max_features)
    train_matrix = features.fit_transform(train["text"])
    train_targets = targets(train)
    if args.C is not None:
        classifier = build_classifier(args.C, args.seed, aspects).fit(train_matrix, train_targets)
        return Pipeline([("features", features), ("classifier", classifier)]), {}
    validation_matrix = features.transform(validation["text"])
    references = targets(validation).reshape(-1)
    num_labels = len(dataset_label_names(train))
    search: dict[str, float] = {}
    best: tuple[float, LogisticRegression | MultiOutputClassifier] | None = None
    for C in BASELINE_C_GRID:
        classifier = build_classifier(C, args.seed, aspects).fit(train_matrix, train_targets)
        predictions = label_probabilities(classifier, validation_matrix, num_labels).argmax(-1).reshape(-1)
        score = compute_metrics(predictions, references, metric)["f1"]
        search[str(C)] = score
        logger.info("C=%g: validation macro F1 %.4f", C, score)
        if best is None or score > best[0]:
            best = (score, classifier)
    return Pipeline([("features", features), ("classifier", best[1])]), search


def score_split(pipeline: Pipeline, dataset: datasets.Dataset, metric: EvaluationModule) -> dict[str, Any]:
    """Macro metrics (with ``num_examples``, the texts), per-class report and confusion matrix of the pipeline's
    argmax; an aspect task's are over every (text, aspect) pair, with ``per_aspect`` figures beside them."""
    names = dataset_label_names(dataset)
    aspects = aspects_of(dataset)
    predictions = pipeline_probabilities(pipeline, dataset["text"], len(names)).argmax(-1).reshape(-1)
    references = targets(dataset).reshape(-1)
    scored = {
        "metrics": {**compute_metrics(predictions, references, metric), "num_examples": dataset.num_rows},
        "per_class": per_class_report(predictions, references, names),
        "confusion": confusion(predictions, references, names),
    }
    if aspects:
        scored["per_aspect"] = per_aspect_report(predictions, references, aspects, names, metric)
    return scored
