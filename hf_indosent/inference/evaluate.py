"""``hf-indosent evaluate``: score a saved model on a labelled split (of an IndoNLU task, or your own file).

Predictions come from the same :class:`~hf_indosent.inference.predictor.Predictor` as ``predict``, so what is evaluated
is exactly what users get. Metrics come from our ``evaluate`` module (:mod:`hf_indosent.metrics.scores`). Outputs: one
JSON file (macro metrics, per-class report, confusion matrix) and a confusion-matrix PNG. An aspect model (CASA,
HoASA) is scored as IndoNLU scores it: macro metrics over every (text, aspect) pair, each aspect's beside them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import datasets
from tqdm.auto import tqdm

from hf_indosent.core.files import check_output_folder, check_output_spares_inputs, made_folder, write_json
from hf_indosent.data.indonlu import load_task
from hf_indosent.data.smsa import load_smsa, require_labels
from hf_indosent.data.tasks import SMSA, Task, get_task
from hf_indosent.inference.arguments import EvaluateArguments, InferenceArguments
from hf_indosent.inference.base import ChunkedPredictor
from hf_indosent.inference.model_task import answers, check_task, predictor_task
from hf_indosent.inference.predictor import load_predictor
from hf_indosent.metrics.report import plot_confusion_matrix
from hf_indosent.metrics.scores import compute_metrics, confusion, load_metric, per_aspect_report, per_class_report

logger = logging.getLogger(__name__)


def load_labelled(args: EvaluateArguments, label_names: Sequence[str], task: Task = SMSA) -> datasets.Dataset:
    """The split of ``task`` (or ``--file``) to score, its label ids following the model's ``label_names`` (id
    order); refuses masked splits."""
    if args.file is not None:
        # Loaded as "validation" so a missing label column is a clear DataFormatError, not an unlabelled test split.
        dataset = load_smsa(
            data_files={"validation": args.file},
            label_names=label_names,
            text_column=args.text_column,
            label_column=args.label_column,
            header=args.header,
            cache_dir=args.dataset_cache_dir,
        )["validation"]
    else:
        splits = load_task(task, args.data_dir, cache_dir=args.dataset_cache_dir)
        if args.split not in splits:
            raise ValueError(f"data_dir {args.data_dir!r} has no {args.split} file: add it or pick another --split")
        dataset = splits[args.split]
    require_labels(dataset, args.name)
    return aligned(dataset, label_names)


def aligned(dataset: datasets.Dataset, label_names: Sequence[str]) -> datasets.Dataset:
    """``dataset`` with the ids of every label column (``label``, or each aspect's) following the model's
    ``label_names``, which may order the task's labels otherwise."""
    label2id = {name: index for index, name in enumerate(label_names)}
    for column, feature in dataset.features.items():
        if isinstance(feature, datasets.ClassLabel) and feature.names != list(label_names):
            dataset = dataset.align_labels_with_mapping(label2id, column)
    return dataset


def evaluation_task(args: EvaluateArguments, predictor: ChunkedPredictor) -> Task | None:
    """The task whose split is scored (:func:`predictor_task`); with ``--file`` only ``--task``, which the model must
    match (``None``: the model's own labels, as the file holds them)."""
    if args.file is None:
        return predictor_task(args.task, predictor)
    if predictor.aspects:
        raise ValueError(
            "--file holds one label per text, but the model answers per aspect: score an aspect task's split with "
            "--task and --data_dir instead"
        )
    task = get_task(args.task) if args.task is not None else None
    if task is not None:
        check_task(predictor, task)
    return task


def predicted_ids(results: Iterable[dict[str, Any]], aspects: Sequence[str], label_ids: dict[str, int]) -> list[int]:
    """The label ids predicted for the data rows, text-major for an aspect model (each text's aspects in ``aspects``
    order). A row the model could not take (its tokenizer refused the text) is refused by number, since scoring it as
    any label would change the metrics."""
    ids = []
    for row, result in enumerate(results, 1):
        if result["error"] is not None:
            raise ValueError(f"example {row} of the data cannot be classified ({result['error']}): fix or remove it")
        ids += [label_ids[answer["label"]] for answer in answers(result, aspects)]
    return ids


def evaluate_dataset(predictor: ChunkedPredictor, dataset: datasets.Dataset) -> dict[str, Any]:
    """Macro metrics, per-class report and confusion matrix of ``predictor`` on a labelled ``dataset``.

    For an aspect model they are IndoNLU's: over every (text, aspect) pair at once (text-major), with each aspect's
    own metrics and confusion matrix under ``per_aspect``."""
    names, aspects = predictor.label_names, predictor.aspects
    results = tqdm(predictor.stream(dataset["text"]), total=dataset.num_rows, desc="Evaluating", unit="text")
    predictions = predicted_ids(results, aspects, {name: index for index, name in enumerate(names)})
    if aspects:
        columns = [dataset[aspect] for aspect in aspects]
        references = [label for labels in zip(*columns, strict=True) for label in labels]  # text-major
    else:
        references = dataset["label"]
    metric = load_metric()
    report = {
        "num_examples": dataset.num_rows,
        "label_names": names,
        "max_length": predictor.max_length,
        "metrics": compute_metrics(predictions, references, metric),
        "per_class": per_class_report(predictions, references, names),
        "confusion_matrix": confusion(predictions, references, names),
    }
    if aspects:
        report |= {"aspects": list(aspects), "num_pairs": len(references)}
        report["per_aspect"] = per_aspect_report(predictions, references, aspects, names, metric)
    return report


def run_evaluation(inference: InferenceArguments, args: EvaluateArguments) -> dict[str, Any]:
    """Run ``hf-indosent evaluate``: write ``<name>_results.json`` and ``<name>_confusion_matrix.png``."""
    output_dir = Path(args.output_dir)
    results_path = output_dir / f"{args.name}_results.json"
    inputs = {"--model": inference.model, "--file": args.file, "--data_dir": args.data_dir}
    check_output_folder(output_dir, "--output_dir", inputs)
    for path in (results_path, output_dir / f"{args.name}_confusion_matrix.png"):
        check_output_spares_inputs(path, "--name", inputs)
    # Made now, so a folder that cannot be made fails before the scoring; removed again if the scoring fails.
    with made_folder(output_dir):
        predictor = load_predictor(inference)
        task = evaluation_task(args, predictor)  # a model of another task is refused before anything is predicted
        dataset = load_labelled(args, predictor.label_names, task or SMSA)
        data = {"model": inference.model, "task": task.name if task else None, "data": args.file or args.split}
        report = {**data, **evaluate_dataset(predictor, dataset)}
    write_json(results_path, report)
    metrics = report["metrics"]
    title = f"{args.name}: accuracy {metrics['accuracy']:.3f}, macro F1 {metrics['f1']:.3f}"
    plot_path = plot_confusion_matrix(
        report["confusion_matrix"], output_dir / f"{args.name}_confusion_matrix.png", title
    )
    logger.info("%s: %s", args.name, ", ".join(f"{key} {value:.4f}" for key, value in metrics.items()))
    if "per_aspect" in report:
        per_aspect = ", ".join(f"{aspect} {scores['f1']:.4f}" for aspect, scores in report["per_aspect"].items())
        logger.info("%s: macro F1 per aspect: %s", args.name, per_aspect)
    logger.info("wrote %s and %s", results_path, plot_path)
    return report


def cli_run(inference: InferenceArguments, args: EvaluateArguments) -> int:
    """``hf-indosent evaluate`` after argument parsing (errors are turned into one line by :mod:`hf_indosent.cli`)."""
    run_evaluation(inference, args)
    return 0
