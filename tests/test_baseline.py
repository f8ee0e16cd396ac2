"""The TF-IDF + logistic regression baseline: same metrics and run folder as training, safe saving, the predictor."""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from pathlib import Path

import pytest
import skops.io as sio
from skops.io.exceptions import UntrustedTypesFoundException

from hf_indosent import cli
from hf_indosent.data.arguments import DataArguments
from hf_indosent.data.smsa import load_smsa
from hf_indosent.inference.arguments import BASELINE_C_GRID, BaselineArguments
from hf_indosent.inference.base import input_error
from hf_indosent.inference.baseline import (
    BASELINE_FILE,
    MODEL_FILE,
    TRUSTED_TYPES,
    BaselinePredictor,
    UnsafeModelFileError,
    run_baseline,
)
from hf_indosent.inference.inputs import BadInput
from hf_indosent.metrics.scores import compute_metrics, confusion, per_class_report

ROOT = Path(__file__).resolve().parents[1]
RUN_FILES = ["args.json", "best", "confusion_matrix.png", "metrics.json"]


@pytest.fixture(scope="module")
def run(tiny_smsa_dir, tmp_path_factory) -> tuple[Path, dict]:
    """A baseline run on the tiny split, C searched on validation."""
    run_dir = tmp_path_factory.mktemp("baseline") / "run"
    cache = tmp_path_factory.mktemp("baseline-cache")
    data = DataArguments(data_dir=str(tiny_smsa_dir), dataset_cache_dir=str(cache))
    return run_dir, run_baseline(data, BaselineArguments(output_dir=str(run_dir)))


@pytest.fixture(scope="module")
def validation(tiny_smsa_dir, tmp_path_factory):
    return load_smsa(data_dir=tiny_smsa_dir, cache_dir=tmp_path_factory.mktemp("validation-cache"))["validation"]


def test_run_folder_is_shaped_like_a_training_run(run):
    run_dir, results = run
    assert sorted(path.name for path in run_dir.iterdir()) == RUN_FILES
    assert sorted(path.name for path in (run_dir / "best").iterdir()) == [BASELINE_FILE, MODEL_FILE]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(results))
    assert set(metrics["validation"]) == {"accuracy", "f1", "precision", "recall", "num_examples"}
    assert metrics["validation"]["num_examples"] == 45
    assert metrics["best_epoch"] is None and metrics["metric_for_best_model"] == "f1"
    assert metrics["label_names"] == ["positive", "neutral", "negative"]
    assert set(metrics["validation_per_class"]) >= {"positive", "neutral", "negative", "macro avg"}
    assert metrics["validation_confusion"]["labels"] == metrics["label_names"]
    assert metrics["train_runtime_s"] > 0
    assert "test" not in metrics  # the tiny test split is masked
    search = metrics["model"]["C_search"]
    assert metrics["model"]["C"] in BASELINE_C_GRID and set(search) == {str(c) for c in BASELINE_C_GRID}
    assert search[str(metrics["model"]["C"])] == max(search.values())
    assert (run_dir / "confusion_matrix.png").read_bytes().startswith(b"\x89PNG")
    args = json.loads((run_dir / "args.json").read_text())
    assert args["baseline"]["output_dir"] == str(run_dir) and args["data"]["max_train_samples"] is None
    info = json.loads((run_dir / "best" / BASELINE_FILE).read_text())
    assert info["format"] == "hf-indosent-baseline" and info["label_names"] == metrics["label_names"]


def test_scored_by_the_metrics_module_on_its_own_predictions(run, validation):
    run_dir, results = run
    predictor = BaselinePredictor(run_dir)
    ids = [predictor.label_names.index(result["label"]) for result in predictor(validation["text"])]
    references = validation["label"]
    assert {**compute_metrics(ids, references), "num_examples": 45} == pytest.approx(results["validation"])
    assert results["validation"]["f1"] > 0.8  # the synthetic reviews are easy
    names = predictor.label_names
    assert per_class_report(ids, references, names) == results["validation_per_class"]
    assert confusion(ids, references, names) == results["validation_confusion"]


def test_predictor_keeps_row_order_with_bad_rows_in_place(run, validation):
    run_dir, _ = run
    predictor = BaselinePredictor(run_dir / "best", chunk_size=3)  # the best/ folder too; chunks cut between rows
    good = validation["text"][:4]
    rows = [good[0], "", "  \t", None, good[1], 7, BadInput("line 6 is not UTF-8"), good[2], good[3]]
    results = list(predictor.stream(iter(rows)))
    assert len(results) == len(rows)
    alone = iter(predictor(good))
    for row, result in zip(rows, results, strict=True):
        reason = input_error(row)
        if reason is not None:
            assert result == {"label": None, "scores": None, "error": reason}
            continue
        assert result == next(alone)
        assert result["error"] is None and list(result["scores"]) == predictor.label_names
        assert sum(result["scores"].values()) == pytest.approx(1.0)
        assert result["label"] == max(result["scores"], key=result["scores"].get)
    assert predictor.max_length is None
    assert predictor(good[0]) == predictor([good[0]])


def is_baseline_dir(path) -> bool:
    from hf_indosent.modeling.folders import baseline_folder

    return baseline_folder(path) is not None


def test_is_baseline_dir(run, tiny_smsa_dir, tmp_path):
    run_dir, _ = run
    (tmp_path / "config.json").write_text("{}")
    assert is_baseline_dir(run_dir) and is_baseline_dir(run_dir / "best") and is_baseline_dir(str(run_dir))
    assert not is_baseline_dir(tiny_smsa_dir) and not is_baseline_dir(tmp_path) and not is_baseline_dir(tmp_path / "x")
    with pytest.raises(ValueError, match=re.escape(f"{str(tmp_path)!r} is not a baseline model")):
        BaselinePredictor(tmp_path)


def tampered(folder: Path, target: Path, class_name: str, module: str, name: str, renames: int | None = None) -> Path:
    """``folder`` (a baseline's best/) copied to ``target``, every ``class_name`` node of model.skops renamed to
    ``module.name`` (at least one; exactly ``renames`` when given)."""
    shutil.copytree(folder, target)
    path = target / MODEL_FILE
    with zipfile.ZipFile(path) as archive:
        members = {item: archive.read(item) for item in archive.namelist()}
    schema = json.loads(members["schema.json"])
    pending, renamed = [schema], 0
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            if node.get("__class__") == class_name:
                node.update({"__class__": name, "__module__": module})
                renamed += 1
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    assert renamed if renames is None else renamed == renames
    members["schema.json"] = json.dumps(schema).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for item, data in members.items():
            archive.writestr(item, data)
    return target


def tampered_copy(run_dir: Path, folder: Path, module: str, name: str) -> Path:
    """best/ copied, with the TfidfTransformer nodes of model.skops (one per vectorizer) renamed to ``module.name``."""
    return tampered(run_dir / "best", folder, "TfidfTransformer", module, name, renames=2)


def test_a_tampered_model_file_is_refused_before_anything_is_built(run, tmp_path):
    run_dir, _ = run
    evil = tampered_copy(run_dir, tmp_path / "evil", "os", "system")
    with pytest.raises(UnsafeModelFileError, match=r"os\.system"):
        BaselinePredictor(evil)
    with pytest.raises(UntrustedTypesFoundException):  # skops itself refuses it too, with our trusted list
        sio.load(evil / MODEL_FILE, trusted=list(TRUSTED_TYPES))
    # A type skops trusts by default, but that no baseline holds, is refused as well.
    foreign = tampered_copy(run_dir, tmp_path / "foreign", "sklearn.svm._classes", "SVC")
    with pytest.raises(UnsafeModelFileError, match=r"sklearn\.svm\._classes\.SVC"):
        BaselinePredictor(foreign)
    (tmp_path / "broken").mkdir()
    shutil.copy(run_dir / "best" / BASELINE_FILE, tmp_path / "broken")
    (tmp_path / "broken" / MODEL_FILE).write_bytes(b"\x80\x04 a pickle, not a zip")
    with pytest.raises(UnsafeModelFileError, match="is not a skops model file"):
        BaselinePredictor(tmp_path / "broken")


@pytest.mark.parametrize(("C", "max_features"), [("1", "5"), ("3", "100000"), (None, "40")])
def test_every_setting_saves_a_model_that_loads_and_predicts_as_fitted(
    tiny_smsa_dir, validation, tmp_path, capsys, C, max_features
):
    """--max_features prunes the vocabulary, whose indices then become numpy integers: the saved file must still load
    (it was refused as tampered with, every time)."""
    run_dir = tmp_path / "run"
    argv = ["baseline", "--data_dir", str(tiny_smsa_dir), "--output_dir", str(run_dir), "--max_features", max_features]
    argv += ["--dataset_cache_dir", str(tmp_path / "cache"), *(["--C", C] if C else [])]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert json.loads((run_dir / "args.json").read_text())["baseline"]["max_features"] == int(max_features)
    assert json.loads((run_dir / "metrics.json").read_text())["model"]["num_features"] <= 2 * int(max_features)
    features = BaselinePredictor(run_dir).pipeline.named_steps["features"]
    assert all(len(vectorizer.vocabulary_) <= int(max_features) for _, vectorizer in features.transformer_list)
    results = list(BaselinePredictor(run_dir).stream(validation["text"]))
    assert len(results) == validation.num_rows
    assert all(abs(sum(result["scores"].values()) - 1) < 1e-6 for result in results)


def test_no_pickle_anywhere_in_the_baseline():
    source = (ROOT / "hf_indosent" / "inference" / "baseline.py").read_text()
    assert not re.search(r"\b(c?pickle|joblib|dill|cloudpickle)\.loads?\b|^\s*import (c?pickle|joblib)", source, re.M)
    assert re.search(r"sio\.load\(path, trusted=list\(TRUSTED_TYPES\)\)", source)


def test_cli_refuses_an_existing_run_then_overwrites_it(tiny_smsa_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)  # a previous training run's leftovers
    (run_dir / "log.jsonl").write_text("{}\n")
    argv = ["baseline", "--data_dir", str(tiny_smsa_dir), "--output_dir", str(run_dir), "--C", "1"]
    argv += ["--dataset_cache_dir", str(tmp_path / "cache")]
    assert cli.main(argv) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and str(run_dir) in lines[0] and "--overwrite_output_dir" in lines[0]
    assert cli.main([*argv, "--overwrite_output_dir"]) == 0
    assert sorted(path.name for path in run_dir.iterdir()) == RUN_FILES
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["model"]["C"] == 1.0 and metrics["model"]["C_search"] == {}


def test_a_label_without_training_rows_is_refused(tiny_smsa_dir, tmp_path):
    lines = (tiny_smsa_dir / "train_preprocess.tsv").read_text().splitlines()
    rows = [line for line in lines if not line.endswith("\tneutral")]
    (tmp_path / "train.tsv").write_text("\n".join(rows) + "\n")
    data = DataArguments(
        train_file=str(tmp_path / "train.tsv"),
        validation_file=str(tiny_smsa_dir / "valid_preprocess.tsv"),
        header=False,
        dataset_cache_dir=str(tmp_path / "cache"),
    )
    with pytest.raises(ValueError, match=r"no rows labelled \['neutral'\]"):
        run_baseline(data, BaselineArguments(output_dir=str(tmp_path / "run"), C=1.0))
    assert not (tmp_path / "run").exists()


def test_predict_and_evaluate_take_a_baseline_run(run, validation, tiny_smsa_dir, tmp_path, capsys):
    from hf_indosent.cli import main

    run_dir, results = run
    output = tmp_path / "out" / "predictions.jsonl"
    texts = validation["text"][:5]
    assert main(["predict", "--model", str(run_dir), "--texts", *texts, "", "--output", str(output)]) == 0
    rows = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    expected = BaselinePredictor(run_dir)(texts)
    assert [row["label"] for row in rows] == [result["label"] for result in expected] + [None]
    assert rows[-1]["error"] == "empty text"
    code = main(
        ["evaluate", "--model", str(run_dir), "--split", "validation", "--data_dir", str(tiny_smsa_dir),
         "--output_dir", str(tmp_path / "eval")]
    )  # fmt: skip
    assert code == 0
    report = json.loads((tmp_path / "eval" / "validation_results.json").read_text())
    assert report["metrics"]["f1"] == pytest.approx(results["validation"]["f1"])
    assert report["num_examples"] == results["validation"]["num_examples"]
