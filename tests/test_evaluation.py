"""evaluate: macro metrics, per-class report, confusion matrix JSON + PNG; refusal of masked splits."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import pytest
from conftest import make_rows, write_tsv
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from hf_indosent import cli
from hf_indosent.data.parsing import LABEL_NAMES
from hf_indosent.data.smsa import MissingLabelsError
from hf_indosent.inference.evaluate import EvaluateArguments, load_labelled
from hf_indosent.inference.predictor import predict

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def gold_rows(path: Path) -> tuple[list[str], list[int]]:
    pairs = [line.rsplit("\t", 1) for line in path.read_text(encoding="utf-8").splitlines()]
    return [text for text, _ in pairs], [LABEL_NAMES.index(label) for _, label in pairs]


def expected_metrics(texts: list[str], gold: list[int], model_dir: Path) -> dict[str, float]:
    """Independent of hf_indosent.metrics.scores: sklearn on the predictions of the Python API."""
    predicted = [LABEL_NAMES.index(result["label"]) for result in predict(texts, model=model_dir)]
    return {
        "accuracy": accuracy_score(gold, predicted),
        "f1": f1_score(gold, predicted, average="macro"),
        "precision": precision_score(gold, predicted, average="macro", zero_division=0),
        "recall": recall_score(gold, predicted, average="macro"),
    }


def test_evaluate_validation_split(tiny_classifier_dir, tiny_smsa_dir, tmp_path, cache_dir):
    out = tmp_path / "eval"
    argv = ["evaluate", "--model", str(tiny_classifier_dir), "--split", "validation", "--data_dir", str(tiny_smsa_dir)]
    assert cli.main([*argv, "--output_dir", str(out), "--dataset_cache_dir", str(cache_dir)]) == 0

    report = json.loads((out / "validation_results.json").read_text(encoding="utf-8"))
    texts, gold = gold_rows(tiny_smsa_dir / "valid_preprocess.tsv")
    assert report["num_examples"] == len(texts) == 45
    assert report["label_names"] == list(LABEL_NAMES)
    assert report["metrics"] == pytest.approx(expected_metrics(texts, gold, tiny_classifier_dir))
    assert report["metrics"]["accuracy"] > 0.5  # the tiny head was trained a little: better than chance

    matrix = report["confusion_matrix"]["matrix"]
    assert list(matrix) == list(LABEL_NAMES)
    assert sum(sum(row.values()) for row in matrix.values()) == 45
    assert {name: sum(matrix[name].values()) for name in LABEL_NAMES} == {
        name: gold.count(index) for index, name in enumerate(LABEL_NAMES)
    }
    assert sum(matrix[name][name] for name in LABEL_NAMES) / 45 == pytest.approx(report["metrics"]["accuracy"])
    assert set(report["per_class"]) >= {*LABEL_NAMES, "macro avg", "weighted avg"}
    assert report["per_class"]["macro avg"]["f1-score"] == pytest.approx(report["metrics"]["f1"])

    image = matplotlib.image.imread(out / "validation_confusion_matrix.png")
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200


def test_evaluate_refuses_the_masked_test_split(tiny_classifier_dir, tiny_smsa_dir, tmp_path, cache_dir, capsys):
    argv = ["evaluate", "--model", str(tiny_classifier_dir), "--split", "test", "--data_dir", str(tiny_smsa_dir)]
    out = tmp_path / "eval"
    assert cli.main([*argv, "--output_dir", str(out), "--dataset_cache_dir", str(cache_dir)]) == 1
    error = capsys.readouterr().err
    assert "has no labels" in error and "hf-indosent predict --submission" in error
    assert not out.exists()  # nothing half-written

    args = EvaluateArguments(split="test", data_dir=str(tiny_smsa_dir), dataset_cache_dir=str(cache_dir))
    with pytest.raises(MissingLabelsError, match="predict --submission"):
        load_labelled(args, LABEL_NAMES)


def test_evaluate_own_csv_file(tiny_classifier_dir, tmp_path, cache_dir):
    rows = make_rows(30, seed=21)
    source = tmp_path / "my_reviews.csv"
    source.write_text("review,sentiment\n" + "".join(f'"{text}",{label}\n' for text, label in rows), encoding="utf-8")
    out = tmp_path / "eval"
    argv = ["evaluate", "--model", str(tiny_classifier_dir), "--file", str(source), "--text_column", "review"]
    argv += ["--label_column", "sentiment", "--output_dir", str(out), "--dataset_cache_dir", str(cache_dir)]
    assert cli.main(argv) == 0
    report = json.loads((out / "my_reviews_results.json").read_text(encoding="utf-8"))
    texts = [text for text, _ in rows]
    gold = [LABEL_NAMES.index(label) for _, label in rows]
    assert report["data"] == str(source)
    assert report["metrics"] == pytest.approx(expected_metrics(texts, gold, tiny_classifier_dir))
    assert (out / "my_reviews_confusion_matrix.png").is_file()


def test_evaluate_file_with_unknown_label_fails_clearly(tiny_classifier_dir, tmp_path, cache_dir, capsys):
    source = write_tsv(tmp_path / "bad.tsv", [("enak", "positive"), ("biasa", "Neutral")])
    argv = ["evaluate", "--model", str(tiny_classifier_dir), "--file", str(source), "--header", "false"]
    assert cli.main([*argv, "--output_dir", str(tmp_path / "eval"), "--dataset_cache_dir", str(cache_dir)]) == 1
    (error,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("hf-indosent evaluate:")]
    assert "bad.tsv, line 2: unknown label 'Neutral'" in error and "did you mean 'neutral'?" in error


def test_evaluate_rejects_bad_options(tiny_classifier_dir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["evaluate", "--model", str(tiny_classifier_dir), "--split", "train"])
    assert exit_info.value.code == 2
    assert "--split 'train' is unknown" in capsys.readouterr().err
