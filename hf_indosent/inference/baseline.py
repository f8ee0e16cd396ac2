"""``hf-indosent baseline``: TF-IDF n-grams + logistic regression, the number a fine-tuned transformer has to beat.

It reads the same splits with the same loader and options as training
(:class:`~hf_indosent.data.arguments.DataArguments`, ``--task`` included),
is scored by the same metrics module and leaves a run folder shaped like a training run's, so the two compare line by
line. Features: word 1-2-grams and character 2-5-grams within word boundaries (``char_wb``), each TF-IDF weighted
(sublinear tf, n-grams seen at least twice), side by side in a ``FeatureUnion``. Classifier: multinomial logistic
regression (saga solver: about ten times faster than lbfgs on these sparse features), one per aspect for CASA and
HoASA (:mod:`hf_indosent.inference.baseline_model`). Without ``--C``, C is the best of ``BASELINE_C_GRID`` by
validation macro F1 (over every (text, aspect) pair for an aspect task); the features are computed once for the whole
search.

The fitted pipeline is saved with skops, never pickle: loading reads data and rebuilds only the types listed in
:data:`TRUSTED_TYPES`, and refuses a file that names any other type, so a tampered or foreign file cannot run code.
:class:`BaselinePredictor` loads it with the interface of :class:`hf_indosent.inference.predictor.Predictor`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
import skops
import skops.io as sio
from accelerate import PartialState
from sklearn.linear_model import LogisticRegression
from sklearn.multioutput import MultiOutputClassifier
from sklearn.pipeline import FeatureUnion, Pipeline
from skops.io.exceptions import UntrustedTypesFoundException

from hf_indosent.core.files import check_output_folder, staged_dir, write_json
from hf_indosent.core.folder_lock import FolderLock, holds_files
from hf_indosent.data.arguments import DataArguments
from hf_indosent.data.builders import has_labels
from hf_indosent.data.loading import load_data
from hf_indosent.inference.arguments import BaselineArguments
from hf_indosent.inference.base import ChunkedPredictor, error_result, input_error
from hf_indosent.inference.baseline_model import (
    aspects_of,
    dataset_label_names,
    fit_baseline,
    heads,
    pipeline_probabilities,
    score_split,
    unseen_labels,
)
from hf_indosent.metrics.report import metrics_to_string, plot_confusion_matrix
from hf_indosent.metrics.scores import load_metric
from hf_indosent.modeling.folders import ARGS_FILE, remove_run_files
from hf_indosent.modeling.loading import BASELINE_FILE, BEST_DIR, baseline_folder

logger = logging.getLogger(__name__)

"""What makes a folder a baseline model: label names, aspects and format, beside the model file (like a config.json)."""
MODEL_FILE = "model.skops"
FORMAT = "hf-indosent-baseline"
FORMAT_VERSION = 2
"""2 added ``aspects`` (one head per aspect) and ``task``; a version 1 folder is read as single-label."""
READABLE_VERSIONS = (1, 2)
TRUSTED_TYPES: tuple[str, ...] = (
    "builtins.dict",
    "builtins.list",
    "builtins.str",
    "builtins.tuple",
    "numpy.float64",
    "numpy.int32",  # vocabulary indices once --max_features prunes it (the platform's default integer)
    "numpy.int64",
    "numpy.ndarray",
    "sklearn.feature_extraction.text.TfidfTransformer",
    "sklearn.feature_extraction.text.TfidfVectorizer",
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.multioutput.MultiOutputClassifier",  # an aspect task's heads: a list of the logistic regressions above
    "sklearn.pipeline.FeatureUnion",
    "sklearn.pipeline.Pipeline",
)
"""Every type a saved baseline holds; a model file naming any other type is refused before anything is built."""


class UnsafeModelFileError(ValueError):
    """A model file that names types a baseline never holds: tampered with, or not written by ``baseline``."""


# --------------------------------------------------------------------------------------------------------------
# Saving and loading without pickle


def saved_types(path: Path) -> set[str]:
    """Fully qualified names of every type a skops file names, read from its JSON schema (nothing is built)."""
    try:
        with zipfile.ZipFile(path) as archive:
            schema = json.loads(archive.read("schema.json"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as err:
        raise UnsafeModelFileError(
            f"{path} is not a skops model file ({err}): write it again with hf-indosent baseline"
        ) from None
    found: set[str] = set()
    pending: list[Any] = [schema]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            if "__class__" in node:
                found.add(f"{node.get('__module__')}.{node['__class__']}")
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return found


def untrusted_types(path: Path) -> list[str]:
    return sorted(saved_types(path) - set(TRUSTED_TYPES))


def check_types(path: Path) -> None:
    unexpected = untrusted_types(path)
    if unexpected:
        raise UnsafeModelFileError(
            f"{path} names types a baseline never holds ({', '.join(unexpected)}): refusing to load it, it was "
            "tampered with or not written by hf-indosent baseline; train the baseline again"
        )


def save_model(
    pipeline: Pipeline,
    folder: Path,
    label_names: Sequence[str],
    settings: dict[str, Any],
    *,
    aspects: Sequence[str] = (),
    task: str | None = None,
) -> None:
    """``folder``/model.skops and baseline.json, written to a staging folder and swapped in whole.

    ``aspects``: an aspect task's aspects, one head each, in head order; ``task``: the IndoNLU task it was fitted on
    (``None`` for the user's own files), as a fine-tuned model's config records it."""
    with staged_dir(folder) as staging:
        # Deflated: the vocabularies are JSON in the file, and shrink about tenfold.
        sio.dump(pipeline, staging / MODEL_FILE, compression=zipfile.ZIP_DEFLATED)
        unexpected = untrusted_types(staging / MODEL_FILE)
        if unexpected:  # what is saved must load: a pipeline holding other types is our bug, not the user's file
            raise RuntimeError(
                f"the fitted baseline holds types TRUSTED_TYPES lacks ({', '.join(unexpected)}): a bug in "
                f"hf_indosent.inference.baseline (settings {settings}); please report it"
            )
        info = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "task": task,
            "label_names": list(label_names),
            "aspects": list(aspects),
            "model": settings,
            "sklearn_version": sklearn.__version__,
            "skops_version": skops.__version__,
        }
        write_json(staging / BASELINE_FILE, info)


def fitted_for(pipeline: Any, num_labels: int, num_aspects: int) -> bool:
    """Whether ``pipeline`` is what ``baseline`` fits: features, then one logistic regression over every label id, or
    one per aspect, each over at least two known label ids (an aspect may lack a rare label)."""
    if not isinstance(pipeline, Pipeline) or list(pipeline.named_steps) != ["features", "classifier"]:
        return False
    classifier = pipeline.named_steps["classifier"]
    expected = MultiOutputClassifier if num_aspects else LogisticRegression
    if not isinstance(pipeline.named_steps["features"], FeatureUnion) or not isinstance(classifier, expected):
        return False
    try:
        regressions = heads(classifier)
        classes = [regression.classes_.tolist() for regression in regressions]
    except AttributeError:  # not fitted
        return False
    if not all(isinstance(regression, LogisticRegression) for regression in regressions):
        return False
    if not num_aspects:
        return classes == [list(range(num_labels))]
    known = set(range(num_labels))
    return len(classes) == num_aspects and all(len(ids) >= 2 and set(ids) <= known for ids in classes)


def load_model(path: Path, num_labels: int, aspects: Sequence[str] = ()) -> Pipeline:
    """The pipeline in ``path``, rebuilt only from :data:`TRUSTED_TYPES`; checked to predict ``num_labels`` ids, for
    each of ``aspects`` when given."""
    check_types(path)
    try:
        pipeline = sio.load(path, trusted=list(TRUSTED_TYPES))
    except UntrustedTypesFoundException as err:
        raise UnsafeModelFileError(f"{path}: {err}; refusing to load it, train the baseline again") from None
    if not fitted_for(pipeline, num_labels, len(aspects)):
        heads_wanted = f"one head per aspect ({', '.join(aspects)})" if aspects else "one head"
        raise UnsafeModelFileError(
            f"{path} does not hold a fitted baseline for {num_labels} labels with {heads_wanted}: train it again"
        )
    return pipeline


def read_info(folder: Path) -> dict[str, Any]:
    """baseline.json, checked; ``aspects`` is ``[]`` for a single-label model (and for version 1, which had none)."""
    path = folder / BASELINE_FILE
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}): train the baseline again") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise ValueError(f"{path} is not a baseline description (format {FORMAT!r} expected): train it again")
    if info.get("format_version") not in READABLE_VERSIONS:
        raise ValueError(
            f"{path} has format_version {info.get('format_version')!r}, this hf-indosent reads "
            f"{' and '.join(map(str, READABLE_VERSIONS))}: use the hf-indosent version that wrote it, or train the "
            "baseline again"
        )
    names = info.get("label_names")
    if not isinstance(names, list) or len(names) < 2 or not all(isinstance(name, str) for name in names):
        raise ValueError(f"{path}: label_names {names!r} must be a list of at least two names: train it again")
    aspects = info.setdefault("aspects", [])
    distinct = (
        isinstance(aspects, list) and all(isinstance(a, str) for a in aspects) and len(set(aspects)) == len(aspects)
    )
    if not distinct:
        raise ValueError(f"{path}: aspects {aspects!r} must be a list of distinct names: train it again")
    return info


class BaselinePredictor(ChunkedPredictor):
    """A saved baseline behind :class:`hf_indosent.inference.predictor.Predictor`'s interface, so predict/evaluate take
    either.

    ``label_names``, ``aspects``, ``max_length`` (``None``: TF-IDF reads whole texts), ``stream(rows)`` and
    ``__call__(texts)`` give one result per input row, in input order: ``{"label", "scores": {name: probability},
    "error"}``, or for an aspect model ``{"aspects": {aspect: {"label", "scores"}}, "error"}`` (the contract of
    :attr:`~hf_indosent.inference.base.ChunkedPredictor.aspects`). Rows that are not usable texts keep their place as
    :func:`~hf_indosent.inference.base.error_result`, with the reason (:func:`~hf_indosent.inference.base.input_error`).
    """

    max_length: int | None = None

    def __init__(self, path: str | Path, *, chunk_size: int = 2048) -> None:
        folder = baseline_folder(path)
        if folder is None:
            raise ValueError(
                f"{str(path)!r} is not a baseline model: it has no {BASELINE_FILE} (nor its {BEST_DIR}/); pass the "
                "--output_dir of hf-indosent baseline or its best/"
            )
        if chunk_size < 1:
            raise ValueError(f"chunk_size={chunk_size} must be a positive number of texts")
        self.model_path = folder
        self.chunk_size = chunk_size
        info = read_info(folder)
        self.label_names: list[str] = info["label_names"]
        self.aspects = tuple(info["aspects"])
        self.pipeline = load_model(folder / MODEL_FILE, len(self.label_names), self.aspects)

    def _predict_chunk(self, chunk: Sequence[Any]) -> list[dict[str, Any]]:
        errors = [input_error(row) for row in chunk]
        texts = [row for row, error in zip(chunk, errors, strict=True) if error is None]
        probabilities = iter(pipeline_probabilities(self.pipeline, texts, len(self.label_names)) if texts else [])
        return [self._result(next(probabilities)) if error is None else error_result(error) for error in errors]

    def _result(self, probabilities: np.ndarray) -> dict[str, Any]:
        """One text's result from its ``(heads, labels)`` probabilities."""
        answers = [
            {
                "label": self.label_names[int(np.argmax(row))],
                "scores": {name: float(p) for name, p in zip(self.label_names, row, strict=True)},
            }
            for row in probabilities
        ]
        if self.aspects:
            return {"aspects": dict(zip(self.aspects, answers, strict=True)), "error": None}
        return {**answers[0], "error": None}


# --------------------------------------------------------------------------------------------------------------
# The command


def check_output_dir(run_dir: Path, overwrite: bool) -> None:
    """Never mix two runs: an output_dir that already holds files is refused unless --overwrite_output_dir."""
    if holds_files(run_dir) and not overwrite:
        raise FileExistsError(
            f"output_dir {str(run_dir)!r} already exists and is not empty: pass --overwrite_output_dir to replace "
            "its run files, or choose another --output_dir"
        )


def run_baseline(data_args: DataArguments, args: BaselineArguments) -> dict[str, Any]:
    """Fit, score and write the run folder; returns what metrics.json holds.

    The folder is locked from the first check to the last file (:class:`~hf_indosent.core.folder_lock.FolderLock`): a
    second run into it is refused at once, instead of deleting this one's files when it finishes."""
    run_dir = Path(args.output_dir)
    check_output_folder(run_dir, "--output_dir", data_args.input_paths)
    with FolderLock(run_dir, job="baseline run"):
        check_output_dir(run_dir, args.overwrite_output_dir)
        return fit_and_write(run_dir, data_args, args)


def fit_and_write(run_dir: Path, data_args: DataArguments, args: BaselineArguments) -> dict[str, Any]:
    """The run itself: fit on train, pick C on validation, score, then (only then) replace a former run's files."""
    dataset = load_data(data_args, PartialState())  # the training loader: same splits, limits and label checks
    label_names = dataset_label_names(dataset["train"])
    aspects = aspects_of(dataset["train"])
    metric = load_metric()
    started = time.perf_counter()
    pipeline, search = fit_baseline(dataset["train"], dataset["validation"], args, metric)
    train_seconds = time.perf_counter() - started
    regression = heads(pipeline.named_steps["classifier"])[0]  # every head has the same settings
    validation = score_split(pipeline, dataset["validation"], metric)
    model = {"C": regression.C, "C_search": search, "num_features": int(regression.coef_.shape[1])}
    if aspects:
        model["unseen_labels"] = unseen_labels(pipeline, aspects, label_names)
    results: dict[str, Any] = {
        "best_epoch": None,
        "metric_for_best_model": "f1",
        "label_names": label_names,
        "validation": validation["metrics"],
        "validation_per_class": validation["per_class"],
        "validation_confusion": validation["confusion"],
        **({"aspects": list(aspects), "validation_per_aspect": validation["per_aspect"]} if aspects else {}),
        "train_runtime_s": train_seconds,
        "model": model,
    }
    if "test" in dataset and has_labels(dataset["test"]):
        results["test"] = score_split(pipeline, dataset["test"], metric)["metrics"]

    # Everything could still fail up to here; only now is a previous run replaced.
    run_dir.mkdir(parents=True, exist_ok=True)
    remove_run_files(run_dir)
    settings = {"C": regression.C, "max_features": args.max_features, "seed": args.seed, "solver": regression.solver}
    task = None if data_args.data_files else data_args.task
    save_model(pipeline, run_dir / BEST_DIR, label_names, settings, aspects=aspects, task=task)
    arguments = {"data": dataclasses.asdict(data_args), "baseline": dataclasses.asdict(args)}
    write_json(run_dir / ARGS_FILE, json.loads(json.dumps(arguments)))
    title = f"Validation, TF-IDF baseline (C={regression.C:g})" + (", all (text, aspect) pairs" if aspects else "")
    plot_confusion_matrix(validation["confusion"], run_dir / "confusion_matrix.png", title=title)
    write_json(run_dir / "metrics.json", results)
    how = "picked on validation" if search else "given"
    logger.info(
        "Baseline fitted in %.1f s (C=%g, %s): VALID %s",
        train_seconds,
        regression.C,
        how,
        metrics_to_string(results["validation"]),
    )
    if aspects:
        per_aspect = " ".join(f"{aspect}:{row['f1']:.4f}" for aspect, row in validation["per_aspect"].items())
        logger.info("VALID F1 per aspect: %s", per_aspect)
        for aspect, names in model["unseen_labels"].items():
            logger.warning("aspect %r has no training rows labelled %s: its head never predicts them", aspect, names)
    logger.info("Wrote %s (metrics.json, confusion_matrix.png, args.json, %s/)", run_dir, BEST_DIR)
    return results


def cli_run(data_args: DataArguments, args: BaselineArguments) -> int:
    """``hf-indosent baseline`` after argument parsing (errors become one line in :mod:`hf_indosent.cli`)."""
    run_baseline(data_args, args)
    return 0
