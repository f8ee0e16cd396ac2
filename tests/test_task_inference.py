"""predict, evaluate and the submission for EmoT, CASA and HoASA models: an aspect model (CASA) answered per aspect,
IndoNLU's flattened metric, the aspect tasks' submission format, and models of another task refused."""

from __future__ import annotations

import csv
import json
import shutil
import zipfile
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
import torch
from conftest import make_aspect_rows
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from hf_indosent import cli, predict_dataset
from hf_indosent.data.tasks import CASA
from hf_indosent.inference.base import error_result
from hf_indosent.inference.predictor import Predictor

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ASPECTS = list(CASA.aspects)
LABELS = list(CASA.label_names)
ASPECT_COLUMNS = [column for aspect in ASPECTS for column in (aspect, f"{aspect}_score")]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """CASA-like reviews of varied lengths (so batches are length-sorted), an empty row at index 3."""
    rows = make_aspect_rows(24, seed=7)
    reviews = [" ".join([row[0]] * (1 + index % 3)) for index, row in enumerate(rows)]
    return [*reviews[:3], "", *reviews[3:]]


@pytest.fixture(scope="module")
def aspect_model(tiny_aspect_classifier_dir, tmp_path_factory) -> Path:
    """The tiny CASA model with aspect i's head leaning to label i mod 3. Where every aspect gets the same label (the
    tiny model, trained a little, answers mostly neutral), outputs that mixed up the aspects would look right;
    leaning, its aspects answer negative, neutral, positive, negative, neutral, positive, and its probabilities still
    move with the text."""
    folder = tmp_path_factory.mktemp("leaning-casa") / "model"
    shutil.copytree(tiny_aspect_classifier_dir, folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    with torch.no_grad():
        bias = model.classifier.bias.view(len(ASPECTS), len(LABELS))
        for index in range(len(ASPECTS)):
            bias[index, index % len(LABELS)] += 10.0
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def torch_results(aspect_model, texts) -> list[dict]:
    return Predictor(aspect_model, backend="torch", batch_size=8, chunk_size=10)(texts)


@pytest.fixture
def recorded_casa_model(aspect_model, tmp_path) -> Path:
    """The CASA model with its task recorded in config.json, as training on CASA saves it."""
    folder = shutil.copytree(aspect_model, tmp_path / "casa-model")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    (folder / "config.json").write_text(json.dumps({**config, "indonlu_task": "casa"}), encoding="utf-8")
    return folder


def hand_probabilities(model_dir: Path, texts: list[str]) -> torch.Tensor:
    """Independent of the predictor: the model's logits for ``texts`` in one padded batch, softmaxed per aspect."""
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    batch = AutoTokenizer.from_pretrained(model_dir)(texts, padding=True, truncation=True, return_tensors="pt")
    with torch.inference_mode():
        logits = model(**batch).logits
    return logits.reshape(len(texts), len(ASPECTS), len(LABELS)).softmax(-1)


def test_aspect_predictor_answers_every_aspect_with_its_own_softmax(aspect_model, texts, torch_results):
    predictor = Predictor(aspect_model, backend="torch")
    assert predictor.aspects == CASA.aspects
    assert predictor.label_names == LABELS  # per aspect, not the flat "fuel:negative" outputs of id2label
    assert torch_results[3] == error_result("empty text")  # a bad row keeps its place, as for any model
    good = [text for text in texts if text]
    expected = hand_probabilities(aspect_model, good)
    answered = [result for result in torch_results if result["error"] is None]
    assert len(answered) == len(good)
    for result, probabilities in zip(answered, expected, strict=True):
        assert set(result) == {"aspects", "error"}
        assert list(result["aspects"]) == ASPECTS
        for aspect, row in zip(ASPECTS, probabilities.tolist(), strict=True):
            answer = result["aspects"][aspect]
            assert list(answer["scores"]) == LABELS
            assert sum(answer["scores"].values()) == pytest.approx(1.0, abs=1e-6)
            assert list(answer["scores"].values()) == pytest.approx(row, abs=1e-5)
            assert answer["label"] == LABELS[max(range(len(LABELS)), key=row.__getitem__)]
    leaning = [LABELS[index % len(LABELS)] for index in range(len(ASPECTS))]
    assert [answer["label"] for answer in answered[0]["aspects"].values()] == leaning  # each head its own aspect's


def read_rows(path: Path) -> list[dict]:
    if path.suffix == ".csv":
        with open(path, encoding="utf-8", newline="") as handle:
            return list(csv.DictReader(handle))
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return pq.read_table(path).to_pylist()


@pytest.mark.parametrize(
    ("name", "extra", "with_text", "with_scores"),
    [
        ("out.csv", [], True, True),  # in one go
        ("out.jsonl", [], True, True),
        ("out.csv", ["--resumable"], True, True),  # piece-wise
        ("out.jsonl", ["--resumable", "--include_scores", "false"], True, False),
        ("out.parquet", [], False, False),  # piece-wise, without text and scores by default
        ("out.parquet", ["--include_scores", "true"], False, True),
    ],
)
def test_predict_writes_a_label_and_a_score_column_per_aspect(
    aspect_model, texts, torch_results, tmp_path, name, extra, with_text, with_scores
):
    source = tmp_path / "reviews.txt"
    source.write_text("\n".join(texts) + "\n", encoding="utf-8")
    output = tmp_path / name
    argv = ["predict", "--model", str(aspect_model), "--file", str(source), "--output", str(output)]
    assert cli.main([*argv, "--backend", "torch", "--chunk_size", "10", *extra]) == 0

    rows = read_rows(output)
    aspect_columns = ASPECT_COLUMNS if with_scores else ASPECTS
    assert list(rows[0]) == ["index", *(["text"] if with_text else []), *aspect_columns, "error"]
    assert len(rows) == len(texts)
    empty = "" if name.endswith(".csv") else None  # CSV has no null: an empty cell
    for index, (row, result) in enumerate(zip(rows, torch_results, strict=True)):
        assert int(row["index"]) == index
        if with_text:
            assert row["text"] == texts[index]
        if result["error"] is not None:
            assert row["error"] == result["error"] == "empty text"
            assert all(row[column] == empty for column in aspect_columns)
            continue
        assert row["error"] == empty
        for aspect, answer in result["aspects"].items():
            assert row[aspect] == answer["label"]
            if with_scores:
                assert float(row[f"{aspect}_score"]) == pytest.approx(answer["scores"][answer["label"]], abs=1e-6)


def test_predict_dataset_adds_a_label_and_a_score_column_per_aspect(aspect_model, texts, torch_results):
    labelled = predict_dataset(aspect_model, datasets.Dataset.from_dict({"text": texts}))
    assert labelled.column_names == ["text", *(f"pred_{column}" for column in ASPECT_COLUMNS), "pred_error"]
    assert labelled.features["pred_fuel_score"].dtype == "float64"
    assert labelled["pred_fuel"] == [
        result["aspects"]["fuel"]["label"] if "aspects" in result else None for result in torch_results
    ]
    assert labelled["pred_error"][3] == "empty text" and labelled["pred_price_score"][3] is None


def casa_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    """A CASA file's texts and each text's labels in IndoNLU's aspect order, read by csv alone."""
    with open(path, encoding="utf-8", newline="") as handle:
        header, *rows = csv.reader(handle)
    assert header == ["sentence", *ASPECTS]
    return [row[0] for row in rows], [row[1:] for row in rows]


@pytest.mark.parametrize("recorded", [False, True], ids=["--task casa", "task recorded by training"])
def test_evaluate_scores_every_text_aspect_pair_as_indonlu(
    recorded, aspect_model, recorded_casa_model, tiny_casa_dir, tmp_path, cache_dir
):
    model = recorded_casa_model if recorded else aspect_model
    out = tmp_path / "eval"
    argv = ["evaluate", "--model", str(model), "--data_dir", str(tiny_casa_dir), "--output_dir", str(out)]
    task = [] if recorded else ["--task", "casa"]
    assert cli.main([*argv, *task, "--dataset_cache_dir", str(cache_dir)]) == 0

    report = json.loads((out / "validation_results.json").read_text(encoding="utf-8"))
    texts, gold_labels = casa_rows(tiny_casa_dir / "valid_preprocess.csv")
    results = Predictor(aspect_model, backend="torch")(texts)
    predicted_labels = [[result["aspects"][aspect]["label"] for aspect in ASPECTS] for result in results]
    gold = [LABELS.index(label) for labels in gold_labels for label in labels]  # text-major pairs
    predicted = [LABELS.index(label) for labels in predicted_labels for label in labels]
    assert report["task"] == "casa" and report["aspects"] == ASPECTS and report["label_names"] == LABELS
    assert (report["num_examples"], report["num_pairs"]) == (30, 30 * len(ASPECTS))
    assert report["metrics"] == pytest.approx(
        {
            "accuracy": accuracy_score(gold, predicted),
            "f1": f1_score(gold, predicted, average="macro"),
            "precision": precision_score(gold, predicted, average="macro", zero_division=0),
            "recall": recall_score(gold, predicted, average="macro", zero_division=0),
        }
    )
    assert sum(sum(row.values()) for row in report["confusion_matrix"]["matrix"].values()) == 30 * len(ASPECTS)
    assert list(report["per_aspect"]) == ASPECTS
    for position, aspect in enumerate(ASPECTS):
        own_gold, own_predicted = gold[position :: len(ASPECTS)], predicted[position :: len(ASPECTS)]
        figures = report["per_aspect"][aspect]
        assert figures["f1"] == pytest.approx(f1_score(own_gold, own_predicted, average="macro"))
        assert figures["accuracy"] == pytest.approx(accuracy_score(own_gold, own_predicted))
        assert sum(sum(row.values()) for row in figures["confusion"]["matrix"].values()) == 30
    assert (out / "validation_confusion_matrix.png").is_file()


@pytest.mark.parametrize("recorded", [False, True], ids=["--task casa", "task recorded by training"])
def test_casa_submission_holds_every_aspect_label_in_indonlu_order(
    recorded, aspect_model, recorded_casa_model, tiny_casa_dir, tmp_path, cache_dir
):
    """IndoNLU's submission_examples/absa-prosa_test.csv: ``index`` and the aspects as header, then each test
    example's index and its label of every aspect."""
    model = recorded_casa_model if recorded else aspect_model
    path = tmp_path / "submission" / "pred.txt"
    argv = ["predict", "--model", str(model), "--submission", str(path), "--data_dir", str(tiny_casa_dir)]
    task = [] if recorded else ["--task", "casa"]
    assert cli.main([*argv, *task, "--dataset_cache_dir", str(cache_dir)]) == 0

    texts, _ = casa_rows(tiny_casa_dir / "test_preprocess_masked_label.csv")
    results = Predictor(aspect_model, backend="torch")(texts)
    expected = [
        ",".join([str(index), *(result["aspects"][a]["label"] for a in ASPECTS)])
        for index, result in enumerate(results)
    ]
    content = path.read_text(encoding="utf-8")
    assert content == "\n".join(["index,fuel,machine,others,part,price,service", *expected]) + "\n"
    assert len(expected) == 12
    with zipfile.ZipFile(path.with_suffix(".zip")) as bundle:
        assert bundle.namelist() == ["pred.txt"]
        assert bundle.read("pred.txt") == path.read_bytes()


def test_a_model_of_another_task_is_refused_in_one_line_before_predicting(
    tiny_classifier_dir,
    aspect_model,
    tiny_casa_dir,
    tiny_smsa_dir,
    tmp_path,
    cache_dir,
    capsys,
    monkeypatch,
):
    def never(*args, **kwargs):
        raise AssertionError("predicted before the task was checked")

    monkeypatch.setattr(Predictor, "stream", never)
    casa = "CASA needs one of negative, neutral, positive for each of the aspects fuel, machine, others, part, price"
    smsa_model = "the model predicts one of positive, neutral, negative per text"
    common = ["--data_dir", str(tiny_casa_dir), "--dataset_cache_dir", str(cache_dir)]

    out = tmp_path / "eval"
    argv = ["evaluate", "--model", str(tiny_classifier_dir), "--task", "casa", "--output_dir", str(out), *common]
    assert cli.main(argv) == 1
    last = capsys.readouterr().err.splitlines()[-1]  # the one-line error, after the model's loading bar
    assert casa in last and smsa_model in last
    assert not out.exists()

    path = tmp_path / "pred.txt"
    argv = ["predict", "--model", str(tiny_classifier_dir), "--task", "casa", "--submission", str(path), *common]
    assert cli.main(argv) == 1
    last = capsys.readouterr().err.splitlines()[-1]  # the one-line error, after the model's loading bar
    assert casa in last and smsa_model in last
    assert not path.exists() and not path.with_suffix(".zip").exists()

    # and the other way round: an aspect model is no SmSA model (the task by default, when none is recorded)
    argv = ["predict", "--model", str(aspect_model), "--submission", str(path)]
    assert cli.main([*argv, "--data_dir", str(tiny_smsa_dir), "--dataset_cache_dir", str(cache_dir)]) == 1
    last = capsys.readouterr().err.splitlines()[-1]
    assert "SmSA needs one of positive, neutral, negative per text, but the model predicts one of negative" in last
    assert "for each of the aspects fuel" in last and not path.exists()


@pytest.mark.parametrize(
    ("command", "extra", "message"),
    [
        ("predict", ["--texts", "a", "--task", "casa"], "--task is only used with --submission"),
        ("predict", ["--submission", "p.txt", "--task", "cas"], "unknown task 'cas'"),
        ("evaluate", ["--task", "casa", "--file", __file__], "--file holds one label per text, but CASA"),
    ],
)
def test_task_options_are_checked_before_anything_loads(tiny_classifier_dir, command, extra, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--model", str(tiny_classifier_dir), *extra])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.fixture(scope="module")
def exported_aspects(aspect_model, tmp_path_factory) -> Path:
    from hf_indosent.inference.export import export

    folder = tmp_path_factory.mktemp("aspect-export") / "onnx"
    export(aspect_model, folder)
    return folder


def aspect_labels(results: list[dict]) -> list[dict | None]:
    return [
        {aspect: answer["label"] for aspect, answer in result["aspects"].items()} if "aspects" in result else None
        for result in results
    ]


def closest_call(result: dict) -> float:
    """The smallest top-two probability margin over a text's aspects: how close its closest call is."""
    margins = []
    for answer in result["aspects"].values():
        first, second = sorted(answer["scores"].values(), reverse=True)[:2]
        margins.append(first - second)
    return min(margins)


def test_onnx_backends_answer_per_aspect_as_torch(exported_aspects, texts, torch_results):
    """model.onnx gives torch's answers; onnx-int8 recomputes in fp32 every text with a close call on any aspect
    (each aspect's own softmax), and keeps its int8 answers for the others."""
    settings = {"batch_size": 8, "chunk_size": 10}
    fp32 = Predictor(exported_aspects, backend="onnx", **settings)(texts)
    assert aspect_labels(fp32) == aspect_labels(torch_results)
    for result, reference in zip(fp32, torch_results, strict=True):
        if result["error"] is None:
            for aspect, answer in result["aspects"].items():
                assert answer["scores"] == pytest.approx(reference["aspects"][aspect]["scores"], abs=1e-4)

    int8 = Predictor(exported_aspects, backend="onnx-int8", int8_fallback_margin=0, **settings)(texts)
    answered = [index for index, result in enumerate(int8) if result["error"] is None]
    margins = sorted(closest_call(int8[index]) for index in answered)
    gap = max(range(len(margins) // 4, 3 * len(margins) // 4), key=lambda index: margins[index + 1] - margins[index])
    assert margins[gap + 1] - margins[gap] > 1e-4  # the threshold lies between two texts, far from both
    margin = (margins[gap] + margins[gap + 1]) / 2
    close = {index for index in answered if closest_call(int8[index]) < margin}
    assert 0 < len(close) < len(answered)

    predictor = Predictor(exported_aspects, backend="onnx-int8", int8_fallback_margin=margin, **settings)
    results = predictor(texts)
    assert (predictor.pipe.model.rechecked, predictor.pipe.model.seen) == (len(close), len(answered))
    for index in answered:
        expected = fp32[index] if index in close else int8[index]
        for aspect, answer in results[index]["aspects"].items():
            assert answer["label"] == expected["aspects"][aspect]["label"]
            assert answer["scores"] == pytest.approx(expected["aspects"][aspect]["scores"], abs=1e-6)
