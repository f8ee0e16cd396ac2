"""``hf-indosent evaluate``: score a saved model on a labelled split (SmSA or your own file).

Predictions come from the same :class:`~hf_indosent.inference.predictor.Predictor` as ``predict``, so what is evaluated
is exactly what users get. Metrics come from our ``evaluate`` module (:mod:`hf_indosent.metrics.scores`). Outputs: one
JSON file (macro metrics, per-class report, confusion matrix) and a confusion-matrix PNG.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
from tqdm.auto import tqdm

from hf_indosent.core.files import check_output_folder, check_output_spares_inputs, made_folder, write_json
from hf_indosent.data.smsa import load_smsa, require_labels
from hf_indosent.inference.arguments import EvaluateArguments, InferenceArguments
from hf_indosent.inference.base import ChunkedPredictor
from hf_indosent.inference.predictor import load_predictor
from hf_indosent.metrics.report import plot_confusion_matrix
from hf_indosent.metrics.scores import compute_metrics, confusion, load_metric, per_class_report

logger = logging.getLogger(__name__)


def load_labelled(args: EvaluateArguments, label_names: Sequence[str]) -> datasets.Dataset:
    """The split to score, its label ids following the model's ``id2label``; refuses masked splits."""
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
        splits = load_smsa(data_dir=args.data_dir, label_names=label_names, cache_dir=args.dataset_cache_dir)
        if args.split not in splits:
            raise ValueError(f"data_dir {args.data_dir!r} has no {args.split} file: add it or pick another --split")
        dataset = splits[args.split]
    require_labels(dataset, args.name)
    return dataset


def predicted_id(row: int, result: dict[str, Any], label_ids: dict[str, int]) -> int:
    """The label id predicted for data row ``row``; a row the model could not take (its tokenizer refused the text) is
    refused by number, since scoring it as any label would change the metrics."""
    if result["error"] is not None:
        raise ValueError(f"example {row} of the data cannot be classified ({result['error']}): fix or remove it")
    return label_ids[result["label"]]


def evaluate_dataset(predictor: ChunkedPredictor, dataset: datasets.Dataset) -> dict[str, Any]:
    """Macro metrics, per-class report and confusion matrix of ``predictor`` on a labelled ``dataset``."""
    names = predictor.label_names
    label_ids = {name: index for index, name in enumerate(names)}
    results = tqdm(predictor.stream(dataset["text"]), total=dataset.num_rows, desc="Evaluating", unit="text")
    predictions = [predicted_id(row, result, label_ids) for row, result in enumerate(results, 1)]
    references = dataset["label"]
    return {
        "num_examples": len(references),
        "label_names": names,
        "max_length": predictor.max_length,
        "metrics": compute_metrics(predictions, references, load_metric()),
        "per_class": per_class_report(predictions, references, names),
        "confusion_matrix": confusion(predictions, references, names),
    }


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
        dataset = load_labelled(args, predictor.label_names)
        report = {"model": inference.model, "data": args.file or args.split, **evaluate_dataset(predictor, dataset)}
    write_json(results_path, report)
    metrics = report["metrics"]
    title = f"{args.name}: accuracy {metrics['accuracy']:.3f}, macro F1 {metrics['f1']:.3f}"
    plot_path = plot_confusion_matrix(
        report["confusion_matrix"], output_dir / f"{args.name}_confusion_matrix.png", title
    )
    logger.info("%s: %s", args.name, ", ".join(f"{key} {value:.4f}" for key, value in metrics.items()))
    logger.info("wrote %s and %s", results_path, plot_path)
    return report


def cli_run(inference: InferenceArguments, args: EvaluateArguments) -> int:
    """``hf-indosent evaluate`` after argument parsing (errors are turned into one line by :mod:`hf_indosent.cli`)."""
    run_evaluation(inference, args)
    return 0
