"""``hf-indosent serve``: TEI shapes and errors, limits, auth, batching, readiness, metrics, drain and start-up errors.

Every test talks HTTP to a real uvicorn on a loopback port: in this process (a thread) for the app's behaviour, in a
subprocess for the command itself (signals, exit codes, one-line errors). The tiny BERT classifier of conftest.py
answers in milliseconds, so waits are set by options (``--max_wait_ms``), never by the model's speed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch
import uvicorn
from conftest import ROOT

from hf_indosent.cli import main as cli_main
from hf_indosent.data.parsing import LABEL_NAMES
from hf_indosent.inference.arguments import InferenceArguments
from hf_indosent.inference.predictor import Predictor, predict
from hf_indosent.modeling.folders import ModelSourceError
from hf_indosent.serving import app as app_module
from hf_indosent.serving.admission import Admission
from hf_indosent.serving.app import ServeSetupError, create_app
from hf_indosent.serving.arguments import SERVE_CPU_BATCH_TOKENS, ServeArguments
from hf_indosent.serving.batcher import Batcher
from hf_indosent.serving.protocol import RequestError
from hf_indosent.serving.server import bind

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEXTS = [
    "makanan nya enak sekali dan tempat nya bersih",
    "pelayanan nya lambat , kasar dan mahal",
    "rapat partai membahas jadwal kampanye",
    "enak",
    "saya kecewa , makanan nya basi dan tempat nya kotor sekali , tidak akan kembali lagi ke restoran ini",
]
LONG_TEXT = " ".join(["makanan nya enak"] * 30 + ["tapi pelayanan nya buruk sekali"] * 20)  # > 128 tokens


def serve_main(argv: list[str]) -> int:
    """``hf-indosent serve ARGS`` in this process, through the runner every command shares."""
    return cli_main(["serve", *argv])


@pytest.fixture(scope="module")
def predictor(tiny_classifier_dir) -> Predictor:
    return Predictor(tiny_classifier_dir, backend="torch")


@contextlib.contextmanager
def serving(app, wait_ready: bool = True) -> Iterator[str]:
    """``app`` on a real uvicorn on a free loopback port, in a thread; yields its base URL."""
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        wait_until(lambda: server.started)
        if wait_ready:
            wait_until(lambda: httpx.get(f"{base}/health").status_code == 200)
        yield base
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def app(predictor):
    """The service with small limits, so each can be crossed with a small request."""
    settings = ServeArguments(max_client_batch_size=8, payload_limit=20_000, max_wait_ms=1)
    return create_app(settings=settings, predictor=predictor)


@pytest.fixture(scope="module")
def base(app) -> Iterator[str]:
    with serving(app) as url:
        yield url


def post(base: str, body, **kwargs) -> httpx.Response:
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(f"{base}/predict", content=content, headers={"content-type": "application/json"}, **kwargs)


def scores(answer: list[dict]) -> dict[str, float]:
    return {item["label"]: item["score"] for item in answer}


# ---------------------------------------------------------------------------------------------------------------
# TEI shapes


def test_single_text_gets_every_label_sorted_by_score(base, predictor):
    response = post(base, {"inputs": TEXTS[0]})
    assert response.status_code == 200
    answer = response.json()
    assert [set(item) for item in answer] == [{"label", "score"}] * len(LABEL_NAMES)
    assert sorted(item["label"] for item in answer) == sorted(LABEL_NAMES)
    assert [item["score"] for item in answer] == sorted((item["score"] for item in answer), reverse=True)
    assert scores(answer) == pytest.approx(predictor([TEXTS[0]])[0]["scores"], abs=1e-6)
    assert post(base, {"inputs": [TEXTS[0]]}).json() == answer  # TEI: a list of one string is one text
    # TEI's Inference Endpoints route (huggingface_hub's InferenceClient posts there), with extra fields ignored
    root = httpx.post(f"{base}/", json={"inputs": TEXTS[0], "parameters": {"top_k": None}})
    assert root.json() == answer
    for header in ("x-compute-tokens", "x-total-time", "x-tokenization-time", "x-queue-time", "x-inference-time"):
        assert response.headers[header].isdigit()


def test_batch_answers_in_request_order_as_predict_does(base, predictor):
    texts = [*TEXTS, LONG_TEXT[:200], TEXTS[3]]
    response = post(base, {"inputs": [[text] for text in texts]})
    assert response.status_code == 200
    answers = response.json()
    expected = predict(texts, predictor)  # what `hf-indosent predict` writes for the same texts
    assert len(answers) == len(texts)
    assert [answer[0]["label"] for answer in answers] == [row["label"] for row in expected]
    assert len({answer[0]["label"] for answer in answers}) > 1  # the texts really get different labels
    for answer, row in zip(answers, expected, strict=True):
        assert scores(answer) == pytest.approx(row["scores"], abs=1e-5)


@pytest.fixture(scope="module")
def exported(tiny_classifier_dir, tmp_path_factory) -> Path:
    from hf_indosent.inference.export import export

    folder = tmp_path_factory.mktemp("serve-export") / "onnx"
    export(tiny_classifier_dir, folder)
    return folder


@pytest.mark.parametrize("backend", ["torch-bf16", "torch-int8", "onnx", "onnx-int8", "auto"])
def test_every_backend_answers_what_predict_gives_with_it(backend, exported, tiny_classifier_dir):
    model = exported if backend.startswith("onnx") or backend == "auto" else tiny_classifier_dir
    texts = [*TEXTS, LONG_TEXT]
    with serving(create_app(InferenceArguments(model=str(model), backend=backend))) as url:
        answers = post(url, {"inputs": [[text] for text in texts], "truncate": True}).json()
        info = httpx.get(f"{url}/info").json()
        raw = post(url, {"inputs": TEXTS[0], "raw_scores": True})
    # the same batches as the server's one call (int8 quantizes activations per batch: scores move with the batch)
    expected = predict(texts, Predictor(model, backend=backend, max_batch_tokens=SERVE_CPU_BATCH_TOKENS))
    assert [answer[0]["label"] for answer in answers] == [row["label"] for row in expected]
    for answer, row in zip(answers, expected, strict=True):
        assert scores(answer) == pytest.approx(row["scores"], abs=1e-5)
    assert info["backend"] == ("onnx-int8" if backend == "auto" else backend)
    assert (raw.status_code, info["raw_scores"]) == (200, True)  # the logits view works on every backend


def test_raw_scores_are_the_models_logits(base, tiny_classifier_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    answer = post(base, {"inputs": [[TEXTS[1]]], "raw_scores": True}).json()[0]
    model = AutoModelForSequenceClassification.from_pretrained(tiny_classifier_dir).eval()
    with torch.inference_mode():
        logits = model(**AutoTokenizer.from_pretrained(tiny_classifier_dir)(TEXTS[1], return_tensors="pt")).logits[0]
    expected = {model.config.id2label[index]: float(value) for index, value in enumerate(logits)}
    assert scores(answer) == pytest.approx(expected, abs=1e-5)
    assert [item["score"] for item in answer] == sorted((item["score"] for item in answer), reverse=True)
    assert sum(item["score"] for item in answer) != pytest.approx(1.0, abs=1e-3)  # not probabilities
    assert httpx.get(f"{base}/info").json()["raw_scores"] is True


def test_long_text_413_unless_truncated_on_the_side_asked(base, predictor, tiny_classifier_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    refused = post(base, {"inputs": LONG_TEXT})
    assert (refused.status_code, refused.json()["error_type"]) == (413, "Validation")
    assert "more than the model's limit of 128" in refused.json()["error"]
    assert "truncate" in refused.json()["error"]
    right = post(base, {"inputs": LONG_TEXT, "truncate": True}).json()
    assert scores(right) == pytest.approx(predictor([LONG_TEXT])[0]["scores"], abs=1e-5)

    left = post(base, {"inputs": LONG_TEXT, "truncate": True, "truncation_direction": "Left"}).json()
    tokenizer = AutoTokenizer.from_pretrained(tiny_classifier_dir, truncation_side="left")
    model = AutoModelForSequenceClassification.from_pretrained(tiny_classifier_dir).eval()
    with torch.inference_mode():
        batch = tokenizer(LONG_TEXT, truncation=True, max_length=128, return_tensors="pt")
        probabilities = model(**batch).logits[0].softmax(-1)
    expected = {model.config.id2label[index]: float(value) for index, value in enumerate(probabilities)}
    assert scores(left) == pytest.approx(expected, abs=1e-5)
    assert scores(left) != pytest.approx(scores(right), abs=1e-3)  # the text's two ends read differently


def test_a_flat_pair_is_refused_naming_the_batch_form(base):
    for inputs in (["first text", "second text"], [["first text", "second text"]]):
        response = post(base, {"inputs": inputs})
        assert (response.status_code, response.json()["error_type"]) == (422, "Tokenizer")
        assert "sentence pair" in response.json()["error"]
        assert '[["first text"], ["second text"]]' in response.json()["error"]


@pytest.mark.parametrize(
    ("body", "status", "error_type", "mentions"),
    [
        ({"inputs": ""}, 400, "Empty", "empty text"),
        ({"inputs": "   "}, 400, "Empty", "empty text"),
        ({"inputs": []}, 400, "Empty", "empty batch"),
        ({"inputs": [["ok"], [""]]}, 400, "Empty", "inputs[1]"),
        ({"inputs": [["teks"]] * 9}, 413, "Validation", "batch size 9 > maximum allowed batch size 8"),
        ({"inputs": "x" * 25_000}, 413, "Validation", "larger than 20000 bytes"),
        ({"inputs": 5}, 422, "Tokenizer", "not int"),
        ({"inputs": [[5]]}, 422, "Tokenizer", "not a text"),
        ({"inputs": [["a"], "b"]}, 422, "Tokenizer", "inputs[1]"),
        ({"inputs": ["a", "b", "c"]}, 422, "Tokenizer", "send a batch"),
        ('{"inputs": "teks \\ud800 rusak"}', 422, "Tokenizer", "not valid Unicode"),
        (b"\xff\xfe not json", 422, "Tokenizer", "not JSON"),
        ({"text": "no inputs"}, 422, "Tokenizer", '"inputs"'),
        ({"inputs": "x", "truncate": "yes"}, 422, "Tokenizer", "truncate must be"),
        ({"inputs": "x", "raw_scores": 1}, 422, "Tokenizer", "raw_scores must be"),
        ({"inputs": "x", "truncation_direction": "middle"}, 422, "Tokenizer", "truncation_direction"),
    ],
)
def test_errors_are_teis_json_with_teis_status(base, body, status, error_type, mentions):
    response = post(base, body)
    assert response.status_code == status
    assert response.json() == {"error": response.json()["error"], "error_type": error_type}
    assert mentions in response.json()["error"]


def test_unknown_routes_and_methods_answer_json(base):
    assert httpx.get(f"{base}/nowhere").json()["error_type"] == "NotFound"
    response = httpx.get(f"{base}/predict")
    assert (response.status_code, response.json()["error_type"]) == (405, "MethodNotAllowed")


def test_info_names_the_model_its_labels_and_limits(base, tiny_classifier_dir):
    info = httpx.get(f"{base}/info").json()
    assert info["model_id"] == str(tiny_classifier_dir)
    assert len(info["model_sha"]) == 64
    assert info["model_type"]["classifier"]["id2label"] == {str(i): name for i, name in enumerate(LABEL_NAMES)}
    assert info["model_type"]["classifier"]["label2id"] == {name: i for i, name in enumerate(LABEL_NAMES)}
    assert (info["backend"], info["model_dtype"], info["max_input_length"]) == ("torch", "float32", 128)
    assert info["max_client_batch_size"] == 8
    assert {"max_batch_tokens", "max_concurrent_requests", "auto_truncate", "version"} <= set(info)
    assert info["max_queue_seconds"] == ServeArguments().max_queue_seconds


def test_metrics_parse_with_prometheus_own_parser(base):
    from prometheus_client.parser import text_string_to_metric_families

    post(base, {"inputs": [["enak"], ["buruk"]]})
    post(base, {"inputs": ""})
    response = httpx.get(f"{base}/metrics")
    assert response.status_code == 200
    families = {family.name: family for family in text_string_to_metric_families(response.text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert samples["hf_indosent_serve_requests_total", ()] >= 2
    assert samples["hf_indosent_serve_request_successes_total", ()] >= 1
    assert samples["hf_indosent_serve_request_failures_total", (("error_type", "Empty"),)] >= 1
    for stage in ("request", "request_tokenization", "request_queue", "request_inference"):
        assert families[f"hf_indosent_serve_{stage}_seconds"].type == "histogram"
        assert samples[f"hf_indosent_serve_{stage}_seconds_count", ()] >= 1
    assert samples["hf_indosent_serve_batch_size_sum", ()] >= 2
    assert families["hf_indosent_serve_requests_in_flight"].type == "gauge"
    assert samples["hf_indosent_serve_queue_wait_seconds", ()] == 0.0  # nothing in flight once answered


# ---------------------------------------------------------------------------------------------------------------
# Batching, overload, failures


def test_concurrent_requests_share_model_calls_and_get_their_own_rows(predictor):
    calls: list[int] = []

    def counted(texts):
        calls.append(len(texts))
        return predictor(texts)

    settings = ServeArguments(max_wait_ms=300)
    served = create_app(settings=settings, predictor=predictor)
    with serving(served) as url:
        service = served.state.service
        service.model.views[service.model.plain] = counted
        with ThreadPoolExecutor(len(TEXTS)) as pool:
            answers = list(pool.map(lambda text: post(url, {"inputs": text}).json(), TEXTS))
    assert max(calls) > 1  # texts of several requests went through one model call
    assert sum(calls) == len(TEXTS)
    for text, answer in zip(TEXTS, answers, strict=True):
        assert scores(answer) == pytest.approx(predictor([text])[0]["scores"], abs=1e-5)


def test_batcher_keeps_each_call_within_the_token_budget():
    calls: list[list[str]] = []
    batcher = Batcher(
        lambda key, texts: calls.append(texts) or [{"error": None}] * len(texts),
        max_batch_tokens=10,
        max_call_tokens=10,
        max_wait_s=0.5,
    )
    jobs = [batcher.submit([f"t{index}"], [length], "plain") for index, length in enumerate((4, 5, 6, 3))]
    jobs[2].future.cancel()  # its client went away: it never reaches the model
    batcher.start()
    for job in (jobs[0], jobs[1], jobs[3]):
        assert job.future.result(timeout=5) == [{"error": None}]
    batcher.stop()
    assert calls == [["t0", "t1"], ["t3"]]  # 4 + 5 fit in 10, 6 would not; the cancelled one is skipped


def test_batcher_sorts_a_call_into_passes_and_answers_each_request_once_its_pass_is_done():
    seen: list[tuple[list[str], dict[str, bool]]] = []
    jobs = {}

    def run(key, texts):
        seen.append((texts, {name: job.future.done() for name, job in jobs.items()}))
        return [{"text": text, "error": None} for text in texts]

    batcher = Batcher(run, max_batch_tokens=64, max_wait_s=0.5)  # a call may hold 16 passes' worth
    jobs["long"] = batcher.submit(["l1", "l2"], [30, 29], "plain")
    jobs["short"] = batcher.submit(["s1", "s2", "s3"], [2, 4, 3], "plain")
    batcher.start()
    assert [row["text"] for row in jobs["long"].future.result(timeout=5)] == ["l1", "l2"]  # each in its own order
    assert [row["text"] for row in jobs["short"].future.result(timeout=5)] == ["s1", "s2", "s3"]
    batcher.stop()
    # one call, shortest first, cut as the Predictor cuts (4 x 29 padded tokens > 64), one Predictor call per pass
    assert [texts for texts, _ in seen] == [["s1", "s3", "s2"], ["l2", "l1"]]
    assert seen[1][1] == {"long": False, "short": True}  # the short request was answered before the long pass ran


def test_429_at_once_when_max_concurrent_requests_are_in_flight(predictor):
    settings = ServeArguments(max_concurrent_requests=2, max_client_batch_size=2, max_wait_ms=1500)
    served = create_app(settings=settings, predictor=predictor)
    with serving(served) as url, ThreadPoolExecutor(2) as pool:
        waiting = [pool.submit(post, url, {"inputs": text}) for text in TEXTS[:2]]
        wait_until(lambda: served.state.service.admission.texts == 2)
        started = time.monotonic()
        refused = post(url, {"inputs": TEXTS[2]})
        assert time.monotonic() - started < 1.0  # refused at once, not after the 1.5 s the others wait
        assert (refused.status_code, refused.json()["error_type"]) == (429, "Overloaded")
        assert [future.result().status_code for future in waiting] == [200, 200]


def held_model(predictor, release: threading.Event, seconds_per_text: float = 0.0):
    """The Predictor's plain view, made to wait for ``release`` (and ``seconds_per_text``) before it answers."""

    def held(texts):
        release.wait(30)
        time.sleep(seconds_per_text * len(texts))
        return predictor(texts)

    return held


def test_max_concurrent_requests_counts_texts_so_batches_beyond_it_get_429_at_once(predictor):
    # TEI's permits are texts: with 6 of 8 taken, a batch of 4 gets 429 at once and a batch of 2 fits; then even a
    # single text gets 429. Counting requests instead would admit all of them and queue their texts.
    settings = ServeArguments(max_concurrent_requests=8, max_client_batch_size=4, max_wait_ms=1)
    served = create_app(settings=settings, predictor=predictor)
    release = threading.Event()
    batches = [[[text] for text in texts] for texts in (TEXTS[:4], TEXTS[2:4], TEXTS[1:3])]
    with serving(served) as url, ThreadPoolExecutor(3) as pool:
        service = served.state.service
        service.model.views[service.model.plain] = held_model(predictor, release)
        admitted = [pool.submit(post, url, {"inputs": batch}, timeout=30) for batch in batches[:2]]
        wait_until(lambda: service.admission.texts == 6)
        started = time.monotonic()
        too_many = post(url, {"inputs": batches[0]}, timeout=5)
        assert (too_many.status_code, too_many.json()["error_type"]) == (429, "Overloaded")
        assert "this request's 4 texts do not fit" in too_many.json()["error"] and "2 free" in too_many.json()["error"]
        admitted.append(pool.submit(post, url, {"inputs": batches[2]}, timeout=30))
        wait_until(lambda: service.admission.texts == 8)
        full = post(url, {"inputs": TEXTS[4]}, timeout=5)
        assert time.monotonic() - started < 2.0  # both at once, while the admitted ones are held
        assert (full.status_code, full.json()["error_type"]) == (429, "Overloaded")
        assert "8 texts are being answered" in full.json()["error"] and "--max_concurrent_requests 8" in full.text
        assert "hf_indosent_serve_texts_in_flight 8.0" in httpx.get(f"{url}/metrics").text
        release.set()
        for batch, future in zip(batches, admitted, strict=True):
            answer = future.result()
            assert answer.status_code == 200
            expected = predictor([text for (text,) in batch])
            assert [scores(row) for row in answer.json()] == [
                pytest.approx(row["scores"], abs=1e-5) for row in expected
            ]
        assert (service.admission.texts, service.admission.requests) == (0, 0)
        assert post(url, {"inputs": batches[0]}).status_code == 200  # every permit came back


def overload(
    url: str, batch: list[str], clients: int, seconds: float, timeout: float, check
) -> list[tuple[str, float]]:
    """``clients`` threads posting ``batch`` back to back for ``seconds`` (pausing a little after anything but 200, as
    a client told to retry later does), ``check(response)`` on every answer: each request's status ("timeout" for a
    client timeout) and seconds."""
    outcomes: list[tuple[str, float]] = []

    def client() -> None:
        stop_at = time.monotonic() + seconds
        with httpx.Client(timeout=timeout) as session:
            while time.monotonic() < stop_at:
                began = time.monotonic()
                try:
                    response = session.post(f"{url}/predict", json={"inputs": [[text] for text in batch]})
                except httpx.TimeoutException:
                    outcomes.append(("timeout", time.monotonic() - began))
                    continue
                outcomes.append((str(response.status_code), time.monotonic() - began))
                check(response)
                if response.status_code != 200:
                    time.sleep(0.01)

    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
    return outcomes


def test_twice_the_capacity_gets_429s_never_timeouts_and_right_answers(predictor):
    # a model that takes 20 ms a text behind a budget of 16 texts: 4 clients keep 4 x 8 = 32 texts in flight, twice
    # what is admitted, for 2 s; an admitted text waits at most ~16 x 20 ms, far below the clients' 5 s timeout
    settings = ServeArguments(max_concurrent_requests=16, max_client_batch_size=8, max_wait_ms=1)
    served = create_app(settings=settings, predictor=predictor)
    release = threading.Event()
    release.set()
    expected = {row_text: row["scores"] for row_text, row in zip(TEXTS, predictor(TEXTS), strict=True)}
    batch = [TEXTS[i % len(TEXTS)] for i in range(8)]

    def check(response: httpx.Response) -> None:
        if response.status_code == 200:
            for text, row in zip(batch, response.json(), strict=True):
                assert scores(row) == pytest.approx(expected[text], abs=1e-5)

    with serving(served) as url:
        service = served.state.service
        service.model.views[service.model.plain] = held_model(predictor, release, seconds_per_text=0.02)
        outcomes = overload(url, batch, clients=4, seconds=2.0, timeout=5, check=check)
    statuses = Counter(status for status, _ in outcomes)
    assert set(statuses) == {"200", "429"}, statuses  # no timeout, no crash
    assert statuses["200"] >= 4 and statuses["429"] >= 4
    assert max(seconds for status, seconds in outcomes if status == "429") < 1.0
    assert max(seconds for status, seconds in outcomes if status == "200") < 3.0


def test_admission_bounds_the_wait_at_the_models_recent_speed():
    admission = Admission(limit=1000, max_queue_s=2.0)
    with admission.texts_of(100):  # before any forward pass the speed is unknown: only the permits bound it
        pass
    admission.observe(texts=16, seconds=1.6)
    admission.observe(texts=4, seconds=0.4)
    assert admission.seconds_per_text == pytest.approx(0.1)  # weighted by texts: 0.1 s each in both passes
    admission.observe(texts=1, seconds=0.5)  # one slow lone text moves the average a fifth of the way
    seconds, texts = 1.6 + 0.2 * (0.4 - 1.6), 16 + 0.2 * (4 - 16)  # the averages after the second pass
    assert admission.seconds_per_text == pytest.approx((seconds + 0.2 * (0.5 - seconds)) / (texts + 0.2 * (1 - texts)))
    admission = Admission(limit=1000, max_queue_s=2.0)
    admission.observe(texts=10, seconds=1.0)
    with admission.texts_of(15):  # 1.5 s of the model's time in flight
        with pytest.raises(RequestError) as refused, admission.texts_of(6):  # 2.1 s > 2 s
            pass
        assert refused.value.error_type == "Overloaded" and "--max_queue_seconds 2" in str(refused.value)
        with admission.texts_of(5):  # 2.0 s: admitted
            assert admission.wait_s() == pytest.approx(2.0)
            with admission.request(), pytest.raises(RequestError), admission.texts_of(1):
                pass  # a request comes in (2.0 s is not past the bound); its one text would be
            admission.observe(texts=1, seconds=1.0)  # the model slowed down: the queue now outlasts the bound
            with pytest.raises(RequestError, match="a new request would wait"), admission.request():
                pass  # refused before its body is read
    assert admission.texts == 0
    with admission.texts_of(50):  # nothing in flight: admitted, however slow the model (it is not a queue)
        pass
    off = Admission(limit=1000, max_queue_s=0.0)
    off.observe(texts=1, seconds=10.0)
    with off.texts_of(10), off.texts_of(10):
        assert off.texts == 20


def test_an_overloaded_slow_model_gets_429_before_its_queue_outlasts_max_queue_seconds(predictor):
    # 50 ms a text, 8 clients keeping 8 x 8 = 64 texts in flight (3.2 s of work) against a bound of 0.6 s: the
    # permits (256) would admit them all and make the last wait 3.2 s; the bound refuses what would wait past 0.6 s
    settings = ServeArguments(
        max_concurrent_requests=256, max_client_batch_size=8, max_wait_ms=1, max_queue_seconds=0.6
    )
    served = create_app(settings=settings, predictor=predictor)
    release = threading.Event()
    release.set()
    batch = [TEXTS[i % len(TEXTS)] for i in range(8)]

    def check(response: httpx.Response) -> None:
        if response.status_code == 429:
            assert "--max_queue_seconds 0.6" in response.json()["error"]

    with serving(served) as url:
        service = served.state.service
        service.model.views[service.model.plain] = held_model(predictor, release, seconds_per_text=0.05)
        assert post(url, {"inputs": [[text] for text in batch]}).status_code == 200  # the model's speed, measured
        outcomes = overload(url, batch, clients=8, seconds=3.0, timeout=10, check=check)
        assert service.admission.seconds_per_text == pytest.approx(0.05, rel=0.5)
    statuses = Counter(status for status, _ in outcomes)
    assert set(statuses) == {"200", "429"}, statuses  # no timeout, no crash
    assert statuses["429"] >= 4
    # admitted: ~0.6 s of queue at most, plus the pass running when it came and its own (without the bound: 3.2 s)
    assert max(seconds for status, seconds in outcomes if status == "200") < 2.5


def test_a_failing_model_call_is_424_and_the_service_stays_up(app, base, predictor, monkeypatch):
    def failing(texts):
        if any("meledak" in text for text in texts):
            raise RuntimeError("simulated kernel failure")
        return predictor(texts)

    service = app.state.service
    monkeypatch.setitem(service.model.views, service.model.plain, failing)
    failed = post(base, {"inputs": "mesin nya meledak"})
    assert (failed.status_code, failed.json()["error_type"]) == (424, "Backend")
    assert "simulated kernel failure" in failed.json()["error"]
    assert post(base, {"inputs": TEXTS[0]}).status_code == 200
    assert httpx.get(f"{base}/health").status_code == 200


# ---------------------------------------------------------------------------------------------------------------
# Readiness, auth, access log


def test_health_is_503_until_the_model_is_loaded_and_warmed_up(predictor, tiny_classifier_dir, monkeypatch):
    loaded, warmed = threading.Event(), threading.Event()
    monkeypatch.setattr(app_module, "load_predictor", lambda inference: loaded.wait(30) and predictor)
    warm_up = app_module.ServedModel.warm_up
    monkeypatch.setattr(app_module.ServedModel, "warm_up", lambda self: warmed.wait(30) and warm_up(self))
    served = create_app(InferenceArguments(model=str(tiny_classifier_dir)), ServeArguments())
    with serving(served, wait_ready=False) as url:
        for event in (loaded, warmed):
            health = httpx.get(f"{url}/health")
            assert (health.status_code, health.json()["error_type"]) == (503, "Unhealthy")
            assert "loading" in health.json()["error"]
            assert post(url, {"inputs": "enak"}).status_code == 503
            assert httpx.get(f"{url}/info").status_code == 503
            event.set()
        wait_until(lambda: httpx.get(f"{url}/health").status_code == 200)
        assert httpx.get(f"{url}/ping").status_code == 200
        assert httpx.get(f"{url}/").status_code == 200
        assert post(url, {"inputs": "enak"}).status_code == 200


@pytest.mark.parametrize(("given", "used"), [(None, 512), (2048, 2048)])
def test_serve_budgets_fewer_tokens_per_call_on_a_cpu(given, used, predictor, tiny_classifier_dir, monkeypatch):
    asked = []
    monkeypatch.setattr(app_module, "load_predictor", lambda inference: asked.append(inference) or predictor)
    inference = InferenceArguments(model=str(tiny_classifier_dir), device="cpu", max_batch_tokens=given)
    with serving(create_app(inference)):
        pass
    assert asked[0].max_batch_tokens == used


def test_a_model_that_fails_to_load_keeps_health_at_503_with_the_reason(tiny_classifier_dir, monkeypatch):
    failures = []

    def broken(inference):
        raise ModelSourceError("model folder x: its weights lack classifier.weight")

    monkeypatch.setattr(app_module, "load_predictor", broken)
    served = create_app(InferenceArguments(model=str(tiny_classifier_dir)), on_fatal=failures.append)
    with serving(served, wait_ready=False) as url:
        wait_until(lambda: bool(failures))
        health = httpx.get(f"{url}/health")
    assert health.status_code == 503
    assert "failed to load: model folder x: its weights lack classifier.weight" in health.json()["error"]
    assert isinstance(failures[0], ModelSourceError)


def test_api_key_from_the_environment_guards_all_but_the_probes(predictor, monkeypatch):
    monkeypatch.setenv("TEST_SERVE_KEY", "s3cret-key")
    compared = []
    real_compare = app_module.hmac.compare_digest
    monkeypatch.setattr(app_module.hmac, "compare_digest", lambda a, b: compared.append((a, b)) or real_compare(a, b))
    served = create_app(settings=ServeArguments(api_key_env="TEST_SERVE_KEY"), predictor=predictor)
    with serving(served) as url:
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "s3cret-key"}):
            refused = httpx.post(f"{url}/predict", json={"inputs": "enak"}, headers=headers)
            assert (refused.status_code, refused.json()["error_type"]) == (401, "Unauthorized")
            assert refused.headers["www-authenticate"] == "Bearer"
        assert httpx.get(f"{url}/info").status_code == 401
        assert httpx.get(f"{url}/metrics").status_code == 401
        for probe in ("/health", "/ping", "/"):
            assert httpx.get(f"{url}{probe}").status_code == 200
        assert httpx.post(f"{url}/", json={"inputs": "enak"}).status_code == 401  # POST / predicts: no probe
        good = {"authorization": "Bearer s3cret-key"}
        assert httpx.post(f"{url}/predict", json={"inputs": "enak"}, headers=good).status_code == 200
        assert httpx.get(f"{url}/info", headers=good).status_code == 200
    # constant time: digests of equal length are compared, whatever the length of what was sent
    assert compared and all(len(a) == len(b) == 32 for a, b in compared)
    assert "s3cret-key" not in json.dumps(served.state.service.info())


def test_an_unset_api_key_variable_is_refused_at_start(predictor, monkeypatch):
    monkeypatch.delenv("TEST_SERVE_KEY", raising=False)
    with pytest.raises(ServeSetupError, match="TEST_SERVE_KEY is not set or empty: export TEST_SERVE_KEY="):
        create_app(settings=ServeArguments(api_key_env="TEST_SERVE_KEY"), predictor=predictor)


def test_one_access_log_line_per_request(base, caplog):
    with caplog.at_level("INFO", logger="hf_indosent.serving.access"):
        post(base, {"inputs": [["enak"], ["buruk"]]})
        post(base, {"inputs": ""})
        httpx.get(f"{base}/health")
    lines = [json.loads(record.getMessage()) for record in caplog.records if record.name.endswith("access")]
    assert [(line["method"], line["path"], line["status"]) for line in lines] == [
        ("POST", "/predict", 200),
        ("POST", "/predict", 400),
        ("GET", "/health", 200),
    ]
    assert lines[0]["texts"] == 2 and lines[1]["error_type"] == "Empty"
    assert all(line["client"].startswith("127.0.0.1:") and line["ms"] >= 0 for line in lines)


# ---------------------------------------------------------------------------------------------------------------
# The command: a real process, its signals, its exit codes, its one-line start-up errors


class ServerProcess:
    """``python -m hf_indosent serve ...`` with its stderr collected line by line."""

    def __init__(self, *args: str) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
        command = [sys.executable, "-m", "hf_indosent", "serve", *args, "--port", "0"]
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        wait_until(lambda: self.port is not None or self.process.poll() is not None, timeout=120)
        assert self.port is not None, "\n".join(self.lines)
        self.url = f"http://127.0.0.1:{self.port}"

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    @property
    def port(self) -> int | None:
        found = [re.search(r"listening on http://127\.0\.0\.1:(\d+)", line) for line in self.lines]
        return next((int(match.group(1)) for match in found if match), None)

    def wait_ready(self) -> None:
        def ready() -> bool:
            with contextlib.suppress(httpx.TransportError):
                return httpx.get(f"{self.url}/health").status_code == 200
            return False

        wait_until(ready, timeout=120)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


@pytest.fixture
def start_server():
    started: list[ServerProcess] = []

    def start(*args: str) -> ServerProcess:
        started.append(ServerProcess(*args))
        return started[-1]

    yield start
    for server in started:
        server.stop()


@pytest.mark.slow
def test_sigterm_answers_requests_in_flight_refuses_new_ones_and_exits_0(start_server, tiny_classifier_dir, predictor):
    server = start_server("--model", str(tiny_classifier_dir), "--max_wait_ms", "5000")
    server.wait_ready()
    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(post, server.url, {"inputs": TEXTS[1]}, timeout=60)
        # the request waits in the batcher (5 s for companions) when the signal comes
        wait_until(lambda: "hf_indosent_serve_requests_in_flight 1.0" in httpx.get(f"{server.url}/metrics").text)
        server.process.send_signal(signal.SIGTERM)

        def refused() -> bool:
            # a new connection is refused, or one accepted just before the port closed is
            # closed unanswered: either way the new request is not served
            try:
                httpx.get(f"{server.url}/health", timeout=1)
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):
                return True
            return False

        wait_until(refused, timeout=3)  # the port closed while the request still waits
        assert not in_flight.done()
        answer = in_flight.result()
    assert answer.status_code == 200
    assert answer.json()[0]["label"] == predictor([TEXTS[1]])[0]["label"]
    assert server.process.wait(30) == 0
    server.reader.join(5)
    assert not any("Traceback" in line for line in server.lines), "\n".join(server.lines)
    access = [json.loads(line) for line in server.lines if line.startswith('{"client"')]
    assert {"path": "/predict", "status": 200} in [{"path": a["path"], "status": a["status"]} for a in access]


@pytest.mark.slow
def test_workers_share_the_port_and_stop_together(start_server, tiny_classifier_dir):
    server = start_server("--model", str(tiny_classifier_dir), "--workers", "2")
    server.wait_ready()
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda text: post(server.url, {"inputs": text}, timeout=60), TEXTS))
    assert [answer.status_code for answer in answers] == [200] * len(TEXTS)
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(60) == 0


@pytest.mark.slow
def test_workers_that_cannot_load_the_model_stop_the_command_with_exit_1(tiny_classifier_dir):
    # offline (conftest), a Hub id passes the start-up checks but no worker can load it
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "hf_indosent", "serve", "--model", "someone/no-such-model", "--workers", "2"]
    done = subprocess.run([*command, "--port", "0"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert errors[-1].startswith("hf-indosent serve: error: a worker could not load the model")
    assert all(line.startswith("hf-indosent serve: error: model 'someone/no-such-model'") for line in errors[:-1])
    assert "Traceback" not in done.stderr


def run_serve(argv: list[str], capsys) -> tuple[int, list[str]]:
    """The command in this process, through its runner: exit code and stderr lines (usage errors exit 2)."""
    try:
        code = serve_main(argv)
    except SystemExit as stop:
        code = stop.code
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("option", "mentions"),
    [
        (["--port", "70000"], "--port 70000 is not a TCP port"),
        (["--workers", "0"], "--workers 0 must be a positive whole number"),
        (["--max_wait_ms", "-1"], "--max_wait_ms -1.0 is out of range"),
        (["--max_queue_seconds", "-1"], "--max_queue_seconds -1.0 must be >= 0 seconds"),
        (["--graceful_timeout", "nan"], "graceful_timeout=nan is not a finite number"),
        (["--api_key_env", " "], "--api_key_env is empty"),
        (["--max_client_batch_size", "0"], "--max_client_batch_size 0 must be a positive whole number"),
        (["--max_concurrent_requests", "16"], "--max_client_batch_size 32 > --max_concurrent_requests 16"),
    ],
)
def test_bad_serve_options_are_one_line_usage_errors(option, mentions, tiny_classifier_dir, capsys):
    code, lines = run_serve(["--model", str(tiny_classifier_dir), *option], capsys)
    assert code == 2
    assert len(lines) == 1 and mentions in lines[0]


def test_port_in_use_is_one_line_and_exit_1(tiny_classifier_dir, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, lines = run_serve(["--model", str(tiny_classifier_dir), "--port", str(port)], capsys)
    assert code == 1
    assert lines == [
        f"hf-indosent serve: error: 127.0.0.1:{port} is already in use (another server?): pass another --port, or "
        "stop what listens there (--debug shows the traceback)"
    ]


@pytest.mark.parametrize(
    ("case", "mentions"),
    [
        ("incomplete folder", "incomplete"),
        ("backend without its files", "or use --backend torch"),
        ("unknown backend", "backend='gpu' is unknown"),
        ("unset api key variable", "TEST_SERVE_UNSET_KEY is not set"),
        ("host not of this machine", "--host '203.0.113.7' cannot be listened on here"),
    ],
)
def test_start_up_mistakes_are_one_line(case, mentions, tiny_classifier_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TEST_SERVE_UNSET_KEY", raising=False)
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    (incomplete / "config.json").write_text((Path(tiny_classifier_dir) / "config.json").read_text())
    argv = {
        "incomplete folder": ["--model", str(incomplete)],
        "backend without its files": ["--model", str(tiny_classifier_dir), "--backend", "onnx"],
        "unknown backend": ["--model", str(tiny_classifier_dir), "--backend", "gpu"],
        "unset api key variable": ["--model", str(tiny_classifier_dir), "--api_key_env", "TEST_SERVE_UNSET_KEY"],
        "host not of this machine": ["--model", str(tiny_classifier_dir), "--host", "203.0.113.7"],
    }[case]
    code, lines = run_serve([*argv, "--port", "0"], capsys)
    assert code in (1, 2)  # 2: refused by the argument checks, 1: by the start-up checks
    assert len(lines) == 1 and lines[0].startswith("hf-indosent serve: error: ")
    assert mentions in lines[0]


def test_a_model_that_cannot_load_stops_the_command_with_its_one_line_error(capsys):
    # offline (conftest), a Hub id cannot load: the server was already listening, and stops with exit 1
    code, lines = run_serve(["--model", "someone/no-such-model", "--port", "0"], capsys)
    assert code == 1
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("hf-indosent serve: error: model 'someone/no-such-model'")
    assert not any("Traceback" in line for line in lines)
