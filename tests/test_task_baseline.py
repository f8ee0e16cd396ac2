"""The TF-IDF baseline on IndoNLU's other sentiment tasks (issue 31): EmoT single-label; CASA and HoASA with one
logistic regression per aspect, scored by flattened macro F1 over the (text, aspect) pairs, saved safely and answered
in the aspect contract of ChunkedPredictor.

The baseline command per task (the recipes point at the local copies in ../shared/indonlu/<task>):

    hf-indosent baseline --config configs/emot-baseline.yaml
    hf-indosent baseline --config configs/casa-baseline.yaml
    hf-indosent baseline --config configs/hoasa-baseline.yaml
"""

from __future__ import annotations

import csv
import io
import json
import pickle
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import FILLER, NEGATIVE, POSITIVE, ROOT
from sklearn.metrics import accuracy_score, f1_score
from test_baseline import tampered

from hf_indosent import cli
from hf_indosent.data.arguments import DataArguments
from hf_indosent.data.indonlu import load_task
from hf_indosent.data.tasks import CASA, EMOT, HOASA
from hf_indosent.inference.arguments import BASELINE_C_GRID, BaselineArguments
from hf_indosent.inference.base import error_result, input_error
from hf_indosent.inference.baseline import (
    BASELINE_FILE,
    MODEL_FILE,
    TRUSTED_TYPES,
    BaselinePredictor,
    UnsafeModelFileError,
    run_baseline,
    save_model,
    saved_types,
)
from hf_indosent.inference.baseline_model import fit_baseline
from hf_indosent.metrics.scores import load_metric

CONFIGS = ROOT / "configs"


def write_csv(path: Path, header: tuple[str, ...], rows: list[list[str]]) -> Path:
    buffer = io.StringIO(newline="")
    csv.writer(buffer, lineterminator="\n").writerows([list(header), *rows])
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def ids_by_aspect(results: list[dict], aspects: tuple[str, ...], names: list[str]) -> np.ndarray:
    """``(texts, aspects)`` label ids of a predictor's aspect results."""
    return np.array([[names.index(result["aspects"][aspect]["label"]) for aspect in aspects] for result in results])


# --------------------------------------------------------------------------------------------------------------
# CASA: flattened scores, the saved model, the contract


@pytest.fixture(scope="module")
def casa_run(tiny_casa_dir, tmp_path_factory) -> tuple[Path, dict]:
    """The documented command, with its recipe, on the tiny CASA folder; C searched on validation."""
    run_dir = tmp_path_factory.mktemp("casa-baseline") / "run"
    cache = tmp_path_factory.mktemp("casa-baseline-cache")
    argv = ["baseline", "--config", str(CONFIGS / "casa-baseline.yaml"), "--data_dir", str(tiny_casa_dir)]
    assert cli.main([*argv, "--output_dir", str(run_dir), "--dataset_cache_dir", str(cache)]) == 0
    return run_dir, json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def casa_validation(tiny_casa_dir, tmp_path_factory):
    return load_task("casa", tiny_casa_dir, cache_dir=tmp_path_factory.mktemp("casa-validation"))["validation"]


def test_aspect_baseline_is_scored_by_flattened_macro_f1_over_the_pairs(casa_run, casa_validation):
    run_dir, metrics = casa_run
    predictor = BaselinePredictor(run_dir)
    names = predictor.label_names
    predictions = ids_by_aspect(predictor(casa_validation["text"]), CASA.aspects, names)
    references = np.column_stack([casa_validation[aspect] for aspect in CASA.aspects])
    # by hand: every (text, aspect) pair one prediction, IndoNLU's absa_metrics_fn
    flat_f1 = f1_score(references.reshape(-1), predictions.reshape(-1), average="macro", zero_division=0)
    assert metrics["validation"]["f1"] == pytest.approx(flat_f1)
    assert metrics["validation"]["accuracy"] == pytest.approx(accuracy_score(references.ravel(), predictions.ravel()))
    assert metrics["validation"]["num_examples"] == casa_validation.num_rows == 30  # texts, not pairs
    assert sum(map(sum, (row.values() for row in metrics["validation_confusion"]["matrix"].values()))) == 30 * 6
    assert metrics["validation"]["f1"] > 0.6  # learnable: the aspect's word beside a sentiment word
    # the C search used the same flattened F1
    search = metrics["model"]["C_search"]
    assert set(search) == {str(c) for c in BASELINE_C_GRID} and metrics["model"]["C"] in BASELINE_C_GRID
    assert search[str(metrics["model"]["C"])] == max(search.values()) == pytest.approx(flat_f1)
    # each aspect's figures beside the headline
    assert metrics["aspects"] == list(CASA.aspects) and list(metrics["validation_per_aspect"]) == list(CASA.aspects)
    for index, aspect in enumerate(CASA.aspects):
        row = metrics["validation_per_aspect"][aspect]
        gold, guess = references[:, index], predictions[:, index]
        assert row["f1"] == pytest.approx(f1_score(gold, guess, average="macro", zero_division=0)), aspect
        assert row["accuracy"] == pytest.approx(accuracy_score(gold, guess)), aspect
        assert sum(map(sum, (counts.values() for counts in row["confusion"]["matrix"].values()))) == 30
    assert "test" not in metrics  # the tiny CASA test file is masked


def test_saved_aspect_baseline_answers_the_aspect_contract(casa_run, casa_validation, tiny_casa_dir, tmp_path):
    run_dir, metrics = casa_run
    info = json.loads((run_dir / "best" / BASELINE_FILE).read_text())
    assert (info["task"], info["aspects"], info["label_names"]) == ("casa", list(CASA.aspects), list(CASA.label_names))
    assert metrics["model"]["unseen_labels"] == {}  # every tiny CASA aspect has all three labels

    # fitted in memory, saved, loaded: the same labels as the fitted pipeline's own predict
    dataset = load_task("casa", tiny_casa_dir, cache_dir=tmp_path / "cache")
    args = BaselineArguments(output_dir=str(tmp_path / "unused"), C=metrics["model"]["C"])
    pipeline, _ = fit_baseline(dataset["train"], dataset["validation"], args, load_metric())
    save_model(pipeline, tmp_path / "saved", CASA.label_names, {"C": args.C}, aspects=CASA.aspects, task="casa")
    predictor = BaselinePredictor(tmp_path / "saved", chunk_size=4)
    assert predictor.aspects == CASA.aspects and predictor.label_names == list(CASA.label_names)
    texts = casa_validation["text"]
    rows = [texts[0], "", None, *texts[1:]]
    results = list(predictor.stream(rows))
    assert len(results) == len(rows)
    for row, result in zip(rows[:3], results[:3], strict=True):
        if input_error(row) is not None:
            assert result == error_result(input_error(row))  # bad rows keep their place
    answered = [result for row, result in zip(rows, results, strict=True) if input_error(row) is None]
    expected = pipeline.predict(texts)  # sklearn's MultiOutputClassifier: (texts, aspects) label ids
    assert (ids_by_aspect(answered, CASA.aspects, predictor.label_names) == expected).all()
    for result in answered:
        assert set(result) == {"aspects", "error"} and result["error"] is None
        assert list(result["aspects"]) == list(CASA.aspects)
        for answer in result["aspects"].values():
            assert set(answer) == {"label", "scores"} and list(answer["scores"]) == list(CASA.label_names)
            assert sum(answer["scores"].values()) == pytest.approx(1.0)
            assert answer["label"] == max(answer["scores"], key=answer["scores"].get)
    # and the run folder's model answers as the command scored it
    assert ids_by_aspect(BaselinePredictor(run_dir)(texts), CASA.aspects, predictor.label_names).shape == (30, 6)


def test_the_safety_check_still_refuses_a_tampered_aspect_model(casa_run, tmp_path):
    run_dir, _ = casa_run
    best = run_dir / "best"
    # the allow-list grew by exactly the aspect heads' container
    assert saved_types(best / MODEL_FILE) <= set(TRUSTED_TYPES)
    assert "sklearn.multioutput.MultiOutputClassifier" in saved_types(best / MODEL_FILE)
    # one aspect head swapped for os.system: refused before anything is built
    evil = tampered(best, tmp_path / "evil", "LogisticRegression", "os", "system")
    with pytest.raises(UnsafeModelFileError, match=r"os\.system"):
        BaselinePredictor(evil)
    # the aspect container swapped for a type skops trusts by default, but no baseline holds
    foreign = tampered(best, tmp_path / "foreign", "MultiOutputClassifier", "sklearn.multioutput", "ClassifierChain")
    with pytest.raises(UnsafeModelFileError, match=r"sklearn\.multioutput\.ClassifierChain"):
        BaselinePredictor(foreign)
    # a pickle where the skops file should be
    (tmp_path / "pickled").mkdir()
    shutil.copy(best / BASELINE_FILE, tmp_path / "pickled")
    (tmp_path / "pickled" / MODEL_FILE).write_bytes(pickle.dumps({"not": "a skops file"}))
    with pytest.raises(UnsafeModelFileError, match="is not a skops model file"):
        BaselinePredictor(tmp_path / "pickled")
    # baseline.json promising aspects the model does not have (fewer heads)
    shutil.copytree(best, tmp_path / "fewer")
    info = json.loads((tmp_path / "fewer" / BASELINE_FILE).read_text())
    (tmp_path / "fewer" / BASELINE_FILE).write_text(json.dumps({**info, "aspects": [*info["aspects"], "extra"]}))
    with pytest.raises(UnsafeModelFileError, match="one head per aspect"):
        BaselinePredictor(tmp_path / "fewer")


# --------------------------------------------------------------------------------------------------------------
# HoASA: a rare label missing from some aspects' training rows

HOASA_WORDS = {  # each HoASA aspect named by one word
    "ac": "ac",
    "air_panas": "shower",
    "bau": "bau",
    "general": "hotel",
    "kebersihan": "kebersihan",
    "linen": "sprei",
    "service": "resepsionis",
    "sunrise_meal": "sarapan",
    "tv": "televisi",
    "wifi": "wifi",
}
ALL_LABELS = ("neg", "pos", "neg_pos")


def hoasa_rows(n: int, seed: int, allowed: dict[str, tuple[str, ...]]) -> list[list[str]]:
    """Reviews naming one aspect each, beside a negative word, a positive word or both (``neg_pos``); the other
    aspects ``neut``. Aspect ``i % 10`` cycles through its ``allowed`` labels, so each aspect holds exactly those."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        aspect = HOASA.aspects[i % len(HOASA.aspects)]
        labels = allowed[aspect]
        label = labels[(i // len(HOASA.aspects)) % len(labels)]
        words = {"neut": [], "neg": [rng.choice(NEGATIVE)], "pos": [rng.choice(POSITIVE)]}
        words["neg_pos"] = [*words["pos"], "tapi", *words["neg"]]
        tokens = [*rng.choices(FILLER, k=rng.randint(1, 4)), HOASA_WORDS[aspect], *words[label]]
        rows.append([" ".join(tokens), *(label if other == aspect else "neut" for other in HOASA.aspects)])
    return rows


@pytest.fixture(scope="module")
def hoasa_dir(tmp_path_factory) -> Path:
    """HoASA-format folder: ``ac`` never ``neg_pos`` in training (the last id), ``wifi`` never ``neg`` (the first id,
    so probabilities must be placed by label id); validation and a labelled test hold every label for every aspect."""
    folder = tmp_path_factory.mktemp("tiny-hoasa")
    train = dict.fromkeys(HOASA.aspects, ALL_LABELS) | {"ac": ("neg", "pos"), "wifi": ("pos", "neg_pos")}
    write_csv(folder / "train_preprocess.csv", HOASA.header, hoasa_rows(240, seed=1, allowed=train))
    every = dict.fromkeys(HOASA.aspects, ALL_LABELS)
    write_csv(folder / "valid_preprocess.csv", HOASA.header, hoasa_rows(60, seed=2, allowed=every))
    rows = hoasa_rows(HOASA.rows["test"], seed=3, allowed=every)  # upstream's row count: a labelled test
    write_csv(folder / "test_preprocess.csv", HOASA.header, rows)
    return folder


def test_a_label_missing_from_an_aspects_training_rows_is_never_predicted_and_reported(hoasa_dir, tmp_path):
    data = DataArguments(task="hoasa", data_dir=str(hoasa_dir), dataset_cache_dir=str(tmp_path / "cache"))
    metrics = run_baseline(data, BaselineArguments(output_dir=str(tmp_path / "run")))
    assert metrics["model"]["unseen_labels"] == {"ac": ["neg_pos"], "wifi": ["neg"]}
    assert metrics["test"]["num_examples"] == HOASA.rows["test"]  # the labelled test is scored, over its pairs
    assert metrics["validation"]["f1"] > 0.6

    predictor = BaselinePredictor(tmp_path / "run")
    validation = load_task("hoasa", hoasa_dir, cache_dir=tmp_path / "cache")["validation"]
    results = predictor(validation["text"])
    for result in results:
        answers = result["aspects"]
        assert answers["ac"]["scores"]["neg_pos"] == 0.0 and answers["wifi"]["scores"]["neg"] == 0.0
        assert all(sum(answer["scores"].values()) == pytest.approx(1.0) for answer in answers.values())
        assert all(list(answer["scores"]) == list(HOASA.label_names) for answer in answers.values())
    assert any(result["aspects"]["tv"]["scores"]["neg_pos"] > 0.5 for result in results)  # others learnt it
    # placed by id: the wifi head (classes neut, pos, neg_pos) agrees with sklearn's own predict
    classifier = predictor.pipeline.named_steps["classifier"]
    wifi = HOASA.aspects.index("wifi")
    assert classifier.estimators_[wifi].classes_.tolist() == [1, 2, 3]
    predictions = ids_by_aspect(results, HOASA.aspects, predictor.label_names)
    assert (predictions == predictor.pipeline.predict(validation["text"])).all()
    assert {HOASA.label_names[i] for i in predictions[:, wifi]} >= {"pos", "neg_pos"}
    # scored honestly: the validation's ac/neg_pos and wifi/neg pairs count as misses
    references = np.column_stack([validation[aspect] for aspect in HOASA.aspects]).reshape(-1)
    flat_f1 = f1_score(references, predictions.reshape(-1), average="macro", zero_division=0)
    assert metrics["validation"]["f1"] == pytest.approx(flat_f1)


def test_an_aspect_with_a_single_training_label_is_refused_saying_what_to_do(hoasa_dir, tmp_path):
    folder = tmp_path / "hoasa"
    shutil.copytree(hoasa_dir, folder)
    train = dict.fromkeys(HOASA.aspects, ALL_LABELS) | {"bau": ("neut",)}
    write_csv(folder / "train_preprocess.csv", HOASA.header, hoasa_rows(240, seed=1, allowed=train))
    data = DataArguments(task="hoasa", data_dir=str(folder), dataset_cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match=r"aspect 'bau' is labelled \['neut'\]: .* add examples"):
        run_baseline(data, BaselineArguments(output_dir=str(tmp_path / "run"), C=1.0))
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------------------------------------------
# EmoT: single-label, five emotions

EMOTION_WORDS = {
    "sadness": ["sedih", "menangis", "kehilangan"],
    "anger": ["marah", "kesal", "benci"],
    "love": ["sayang", "cinta", "rindu"],
    "fear": ["takut", "cemas", "ngeri"],
    "happy": ["senang", "bahagia", "gembira"],
}


def emot_rows(n: int, seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = EMOT.label_names[i % len(EMOT.label_names)]
        tokens = ["[USERNAME]", *rng.choices(FILLER, k=rng.randint(1, 5)), rng.choice(EMOTION_WORDS[label])]
        rows.append([label, " ".join(tokens)])
    return rows


def test_emot_runs_single_label_and_records_its_task(tmp_path):
    folder = tmp_path / "emot"
    folder.mkdir()
    write_csv(folder / "train_preprocess.csv", EMOT.header, emot_rows(100, seed=1))
    write_csv(folder / "valid_preprocess.csv", EMOT.header, emot_rows(40, seed=2))
    masked = [["happy", text] for _, text in emot_rows(10, seed=3)]
    write_csv(folder / EMOT.masked_test_file, EMOT.header, masked)
    run_dir = tmp_path / "run"
    argv = ["baseline", "--config", str(CONFIGS / "emot-baseline.yaml"), "--data_dir", str(folder)]
    assert cli.main([*argv, "--output_dir", str(run_dir), "--dataset_cache_dir", str(tmp_path / "cache")]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["label_names"] == list(EMOT.label_names) and "aspects" not in metrics
    assert "unseen_labels" not in metrics["model"] and "test" not in metrics  # masked test
    info = json.loads((run_dir / "best" / BASELINE_FILE).read_text())
    assert (info["task"], info["aspects"], info["format_version"]) == ("emot", [], 2)

    predictor = BaselinePredictor(run_dir)
    validation = load_task("emot", folder, cache_dir=tmp_path / "cache")["validation"]
    results = predictor(validation["text"])
    assert predictor.aspects == () and all(set(result) == {"label", "scores", "error"} for result in results)
    assert all(list(result["scores"]) == list(EMOT.label_names) for result in results)
    ids = [EMOT.label2id[result["label"]] for result in results]
    assert metrics["validation"]["f1"] == pytest.approx(f1_score(validation["label"], ids, average="macro"))
    assert metrics["validation"]["f1"] > 0.8

    # a folder written before aspects (format_version 1, no aspects, no task) still loads, single-label
    legacy = {key: value for key, value in info.items() if key not in ("aspects", "task")} | {"format_version": 1}
    (run_dir / "best" / BASELINE_FILE).write_text(json.dumps(legacy))
    assert BaselinePredictor(run_dir)(validation["text"]) == results
