"""``hf-indosent serve`` with an aspect model (CASA): one answer per aspect in TEI's shape, /info's aspects, raw scores
per aspect, and the batcher's shared model calls answering what the Predictor answers; a single-label model's
answers keep TEI's plain shape. In-process: the app behind Starlette's test client."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from fastapi.testclient import TestClient
from huggingface_hub import TextClassificationOutputElement

from hf_indosent.data.tasks import CASA
from hf_indosent.inference.predictor import Predictor
from hf_indosent.modeling.aspects import aspect_scores, flat_label_names
from hf_indosent.serving.app import create_app
from hf_indosent.serving.arguments import ServeArguments

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEXTS = [
    "mesin nya bagus dan bensin nya murah",
    "harga nya mahal , layanan nya lambat",
    "onderdil kecewa",
    "lainnya keren tapi mesin nya jelek sekali",
]
ANSWER_KEYS = {"aspect", "label", "score", "scores"}


@pytest.fixture(scope="module")
def predictor(tiny_aspect_classifier_dir) -> Predictor:
    return Predictor(tiny_aspect_classifier_dir, backend="torch")


@pytest.fixture(scope="module")
def aspect_model(tiny_aspect_classifier_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(tiny_aspect_classifier_dir).eval()
    return model, AutoTokenizer.from_pretrained(tiny_aspect_classifier_dir)


@contextlib.contextmanager
def ready_client(app) -> Iterator[TestClient]:
    """The app's in-process client once the model is loaded and warmed up (``/health`` 200)."""
    with TestClient(app) as client:
        deadline = time.monotonic() + 60
        while client.get("/health").status_code != 200:
            assert time.monotonic() < deadline, "the model did not load"
            time.sleep(0.02)
        yield client


@pytest.fixture(scope="module")
def client(predictor) -> Iterator[TestClient]:
    with ready_client(create_app(settings=ServeArguments(max_wait_ms=1), predictor=predictor)) as ready:
        yield ready


def expected_answer(row: dict) -> list[dict]:
    """What the service must answer for one Predictor row: each aspect, in order, with its ranked scores."""
    answers = []
    for aspect, result in row["aspects"].items():
        ranked = sorted(result["scores"].items(), key=lambda item: -item[1])
        scores = [{"label": label, "score": score} for label, score in ranked]
        answers.append({"aspect": aspect, "label": result["label"], "score": ranked[0][1], "scores": scores})
    return answers


def assert_same(answer: list[dict], row: dict) -> None:
    expected = expected_answer(row)
    assert [item["aspect"] for item in answer] == list(CASA.aspects)
    assert [(item["label"], [s["label"] for s in item["scores"]]) for item in answer] == [
        (item["label"], [s["label"] for s in item["scores"]]) for item in expected
    ]
    for item, wanted in zip(answer, expected, strict=True):
        assert item["score"] == pytest.approx(wanted["score"], abs=1e-5)
        assert [s["score"] for s in item["scores"]] == pytest.approx([s["score"] for s in wanted["scores"]], abs=1e-5)


def test_each_text_gets_an_answer_per_aspect_as_the_predictor_gives_it(client, predictor):
    response = client.post("/predict", json={"inputs": TEXTS[0]})
    assert response.status_code == 200
    answer = response.json()
    assert [set(item) for item in answer] == [ANSWER_KEYS] * len(CASA.aspects)
    for item in answer:  # TEI's label and score: the aspect's best label, first of its ranked scores
        assert [set(score) for score in item["scores"]] == [{"label", "score"}] * len(CASA.label_names)
        assert item["scores"][0] == {"label": item["label"], "score": item["score"]}
        assert [score["score"] for score in item["scores"]] == sorted(
            (s["score"] for s in item["scores"]), reverse=True
        )
        assert sum(score["score"] for score in item["scores"]) == pytest.approx(1.0, abs=1e-5)  # a softmax per aspect
    assert_same(answer, predictor([TEXTS[0]])[0])
    assert client.post("/", json={"inputs": [TEXTS[0]]}).json() == answer  # TEI's other route, ["text"] as one text
    parsed = TextClassificationOutputElement.parse_obj_as_list(answer)  # how huggingface_hub's client reads TEI
    assert [(item.aspect, item.label) for item in parsed] == [(item["aspect"], item["label"]) for item in answer]

    batch = client.post("/predict", json={"inputs": [[text] for text in TEXTS]}).json()
    rows = predictor(TEXTS)
    assert len(batch) == len(TEXTS)
    for answer, row in zip(batch, rows, strict=True):  # request order
        assert_same(answer, row)
    firsts = {answer[0]["score"] for answer in batch}
    assert len(firsts) == len(TEXTS)  # each text its own scores: rows mixed up between texts would show


def test_info_reports_the_aspects_and_the_labels_each_answers_with(client, tiny_aspect_classifier_dir):
    classifier = client.get("/info").json()["model_type"]["classifier"]
    assert classifier["aspects"] == list(CASA.aspects)
    assert classifier["aspect_labels"] == list(CASA.label_names)
    outputs = flat_label_names(CASA.aspects, CASA.label_names)  # the model's own id2label, as TEI reports it
    assert classifier["id2label"] == {str(index): name for index, name in enumerate(outputs)}
    assert classifier["label2id"] == {name: index for index, name in enumerate(outputs)}


def test_raw_scores_are_each_aspects_logits(client, aspect_model):
    model, tokenizer = aspect_model
    response = client.post("/predict", json={"inputs": [[TEXTS[1]]], "raw_scores": True})
    assert response.status_code == 200, response.text
    (answer,) = response.json()
    with torch.inference_mode():
        logits = model(**tokenizer(TEXTS[1], return_tensors="pt")).logits
    per_aspect = logits.reshape(len(CASA.aspects), len(CASA.label_names))
    probabilities = aspect_scores(logits, len(CASA.aspects))[0]
    for item, aspect_logits, aspect_probabilities in zip(answer, per_aspect, probabilities, strict=True):
        expected = dict(zip(CASA.label_names, aspect_logits.tolist(), strict=True))
        assert {score["label"]: score["score"] for score in item["scores"]} == pytest.approx(expected, abs=1e-5)
        assert item["label"] == CASA.label_names[int(aspect_probabilities.argmax())]  # the same label as without
        assert item["score"] == pytest.approx(max(expected.values()), abs=1e-5)
    assert sum(score["score"] for score in answer[0]["scores"]) != pytest.approx(1.0, abs=1e-3)  # not probabilities
    assert client.get("/info").json()["raw_scores"] is True


def test_concurrent_aspect_requests_share_model_calls_and_get_the_predictors_answers(predictor):
    calls: list[int] = []

    def counted(texts):
        calls.append(len(texts))
        return predictor(texts)

    app = create_app(settings=ServeArguments(max_wait_ms=300), predictor=predictor)
    with ready_client(app) as client:
        service = app.state.service
        service.model.views[service.model.plain] = counted
        with ThreadPoolExecutor(len(TEXTS)) as pool:
            answers = list(pool.map(lambda text: client.post("/predict", json={"inputs": text}).json(), TEXTS))
        batch = client.post("/predict", json={"inputs": [[text] for text in TEXTS]}).json()
    assert max(calls) > 1  # texts of several requests went through one model call
    for text, answer, batched in zip(TEXTS, answers, batch, strict=True):
        (row,) = predictor([text])
        assert_same(answer, row)
        assert_same(batched, row)


def test_a_single_label_model_keeps_teis_plain_answers_beside_an_aspect_model(client, tiny_classifier_dir):
    aspect_answer = client.post("/predict", json={"inputs": TEXTS[0]}).json()
    assert {item["aspect"] for item in aspect_answer} == set(CASA.aspects)
    single = Predictor(tiny_classifier_dir, backend="torch")
    with ready_client(create_app(settings=ServeArguments(max_wait_ms=1), predictor=single)) as plain:
        answer = plain.post("/predict", json={"inputs": TEXTS[0]}).json()
        raw = plain.post("/predict", json={"inputs": TEXTS[0], "raw_scores": True}).json()
        classifier = plain.get("/info").json()["model_type"]["classifier"]
    assert [set(item) for item in answer] == [{"label", "score"}] * 3 == [set(item) for item in raw]
    assert {item["label"]: item["score"] for item in answer} == pytest.approx(single([TEXTS[0]])[0]["scores"])
    assert set(classifier) == {"id2label", "label2id"}  # no aspect keys
