"""predict: the Python API, the CLI (texts, stdin, files, TSV/CSV columns), row alignment and the IndoNLU submission."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import SMSA_DIR, make_rows, requires_smsa
from transformers import pipeline

from hf_indosent import cli, predict
from hf_indosent.data.parsing import LABEL_NAMES
from hf_indosent.data.smsa import MASKED_TEST_FILE
from hf_indosent.inference.inputs import BadInput
from hf_indosent.inference.predictor import Predictor, resolve_device

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LONG_TEXT = ("makanan nya enak sekali dan tempat nya nyaman . " * 120)[:5000]


@pytest.fixture(scope="module")
def predictor(tiny_classifier_dir) -> Predictor:
    return Predictor(tiny_classifier_dir, batch_size=8, max_batch_tokens=256, chunk_size=64)


@pytest.fixture(scope="module")
def reference(tiny_classifier_dir):
    """Plain pipeline, one text at a time: what each row's scores must be, whatever our batching does."""
    pipe = pipeline("text-classification", model=str(tiny_classifier_dir), truncation=True, top_k=None)

    def scores(text: str, **tokenizer_kwargs) -> dict[str, float]:
        return {item["label"]: item["score"] for item in pipe([text], **tokenizer_kwargs)[0]}

    return scores


def assert_same_scores(result: dict, expected: dict[str, float]) -> None:
    assert result["scores"] == pytest.approx(expected, abs=1e-5)
    assert result["label"] == max(expected, key=expected.get)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def varied_texts(n: int, seed: int) -> list[str]:
    """Texts of very different lengths, so length sorting really reorders them."""
    rows = make_rows(n, seed=seed)
    return [" ".join([text] * (1 + index % 7)) for index, (text, _) in enumerate(rows)]


def test_predict_api_gives_label_names_and_every_score(tiny_classifier_dir, reference):
    texts = [text for text, _ in make_rows(30, seed=11)]
    results = predict(texts, model=tiny_classifier_dir, batch_size=4)
    assert len(results) == len(texts)
    for text, result in zip(texts, results, strict=True):
        assert list(result["scores"]) == list(LABEL_NAMES)  # every label, in id order
        assert result["error"] is None
        assert sum(result["scores"].values()) == pytest.approx(1.0, abs=1e-5)
        assert_same_scores(result, reference(text))
    assert {result["label"] for result in results} == set(LABEL_NAMES)  # a trained head, never LABEL_0
    assert predict("tempat nya bersih", model=tiny_classifier_dir)[0]["label"] in LABEL_NAMES  # one string


def test_length_sorting_keeps_every_result_on_its_row(predictor, reference):
    texts = varied_texts(150, seed=12)
    lengths = [len(text) for text in texts]
    assert lengths != sorted(lengths)  # the chunks really get reordered
    for text, result in zip(texts, predictor(texts), strict=True):
        assert_same_scores(result, reference(text))


def test_long_text_is_truncated_to_the_model_limit(predictor, reference):
    assert len(LONG_TEXT) == 5000
    assert predictor.max_length == 128  # the tiny model's position limit, made explicit
    (result,) = predictor([LONG_TEXT])
    assert_same_scores(result, reference(LONG_TEXT))
    # Negative words first, then only positive ones: what the model sees depends on where the text is cut.
    mixed = "buruk kotor basi kecewa jelek " * 3 + "enak bagus mantap ramah " * 200
    short, full = Predictor(predictor.model_path, max_length=16)([mixed])[0], predictor([mixed])[0]
    assert_same_scores(short, reference(mixed, max_length=16))
    assert (short["label"], full["label"]) == ("negative", "positive")
    with pytest.raises(ValueError, match=r"max_length=4096 is out of range: use 2\.\.128"):
        Predictor(predictor.model_path, max_length=4096)


def test_batches_respect_text_and_token_limits(predictor):
    lengths = [5, 120, 7, 64, 3, 30, 30, 128, 9, 2, 50, 11]
    batches = list(predictor._batches(lengths))  # batch_size=8, max_batch_tokens=256
    assert sorted(index for batch in batches for index in batch) == list(range(len(lengths)))
    flat = [lengths[index] for batch in batches for index in batch]
    assert flat == sorted(lengths)  # shortest first: similar lengths share a batch
    for batch in batches:
        assert len(batch) <= 8
        assert len(batch) == 1 or len(batch) * max(lengths[index] for index in batch) <= 256
    assert [len(batch) for batch in batches] == [8, 2, 2]  # 8 texts max; then 3 x 120 > 256 tokens


def test_bad_inputs_get_an_error_on_their_own_row(predictor, reference):
    rows = ["makanan nya enak", "", "  \t ", None, 42, BadInput("line 6 is not valid UTF-8"), "pelayanan nya kasar"]
    results = predictor(rows)
    assert [result["error"] for result in results] == [
        None,
        "empty text",
        "empty text",
        "not a text: got NoneType",
        "not a text: got int",
        "line 6 is not valid UTF-8",
        None,
    ]
    assert all(result["label"] is None and result["scores"] is None for result in results[1:6])
    assert_same_scores(results[0], reference(rows[0]))
    assert_same_scores(results[6], reference(rows[6]))


def test_stream_holds_one_chunk_at_a_time(tiny_classifier_dir):
    consumed = 0

    def rows():
        nonlocal consumed
        for text in varied_texts(100, seed=13):
            consumed += 1
            yield text

    stream = Predictor(tiny_classifier_dir, batch_size=4, chunk_size=16).stream(rows())
    next(stream)
    assert consumed == 16  # one chunk read, not the whole input
    assert 1 + sum(1 for _ in stream) == 100


def test_refuses_models_without_label_names(tiny_model_dir):
    with pytest.raises(ValueError, match="has no label names"):
        predict(["bagus"], model=tiny_model_dir)


def test_run_folder_means_its_best_model(tiny_classifier_dir, tmp_path):
    shutil.copytree(tiny_classifier_dir, tmp_path / "run" / "best")
    assert Predictor(tmp_path / "run").model_path == str(tmp_path / "run" / "best")


@pytest.mark.parametrize(("speedup", "warned"), [(0.008, True), (4.5, False)])
def test_torch_bf16_on_a_cpu_with_emulated_bf16_warns_once_and_still_runs(
    tiny_classifier_dir, monkeypatch, caplog, speedup, warned
):
    from hf_indosent.inference import predictor as prediction

    monkeypatch.setattr(prediction, "bf16_matmul_speedup", lambda: speedup)
    with caplog.at_level("WARNING", logger="hf_indosent.inference.predictor"):
        results = Predictor(tiny_classifier_dir, backend="torch-bf16", device="cpu")(["enak sekali", "buruk"])
    assert [result["label"] in LABEL_NAMES for result in results] == [True, True]
    messages = [record.getMessage() for record in caplog.records if record.name == "hf_indosent.inference.predictor"]
    if warned:
        assert len(messages) == 1 and "0.008x" in messages[0] and "use torch, or onnx" in messages[0]
    else:
        assert messages == []


def test_only_torch_bf16_on_a_cpu_measures_bf16(tiny_classifier_dir, monkeypatch):
    from hf_indosent.inference import predictor as prediction

    monkeypatch.setattr(prediction, "bf16_matmul_speedup", lambda: pytest.fail("measured for an fp32 backend"))
    assert Predictor(tiny_classifier_dir, backend="torch", device="cpu")("enak")[0]["error"] is None


def test_device_selection():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU is visible"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="is not a torch device"):
        resolve_device("gpu0")


def test_cli_10000_lines_keep_order_and_count(tiny_classifier_dir, tmp_path, reference):
    texts = varied_texts(10_000, seed=14)
    empty = {17, 5000, 9999}
    for index in empty:
        texts[index] = "   " if index != 9999 else ""
    source = tmp_path / "reviews.txt"
    source.write_text("\n".join(texts) + "\n", encoding="utf-8")
    output = tmp_path / "out" / "predictions.csv"
    output.parent.mkdir()
    argv = ["predict", "--model", str(tiny_classifier_dir), "--file", str(source), "--output", str(output)]
    assert cli.main([*argv, "--batch_size", "64", "--chunk_size", "1000"]) == 0

    rows = read_csv(output)
    assert len(rows) == 10_000
    assert [int(row["index"]) for row in rows] == list(range(10_000))
    assert [row["text"] for row in rows] == texts
    assert list(rows[0]) == ["index", "text", "label", "score_positive", "score_neutral", "score_negative", "error"]
    assert {index for index, row in enumerate(rows) if row["error"]} == empty
    assert all(rows[index]["label"] == "" and rows[index]["error"] == "empty text" for index in empty)
    assert {row["label"] for row in rows if not row["error"]} == set(LABEL_NAMES)
    for index in (0, 1, 999, 1000, 4321, 9998):  # scores belong to their own line, across chunk borders
        scores = {name: float(rows[index][f"score_{name}"]) for name in LABEL_NAMES}
        assert_same_scores({"label": rows[index]["label"], "scores": scores}, reference(texts[index]))


def test_cli_stdin_to_jsonl(tiny_classifier_dir, tmp_path, monkeypatch):
    raw = (
        b"tempat nya kotor\r\n\nmakanan nya enak\n\xff\xfe rusak\nterakhir"  # CRLF, empty, not UTF-8, no final newline
    )
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8"))
    output = tmp_path / "out.jsonl"
    assert cli.main(["predict", "--model", str(tiny_classifier_dir), "--output", str(output)]) == 0
    records = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert [record["index"] for record in records] == [0, 1, 2, 3, 4]
    assert [record["text"] for record in records] == ["tempat nya kotor", "", "makanan nya enak", None, "terakhir"]
    assert [record["error"] for record in records] == [
        None,
        "empty text",
        None,
        "line 4 is not valid UTF-8 (invalid start byte at byte 0)",
        None,
    ]
    assert all(set(record["scores"]) == set(LABEL_NAMES) for record in records if record["error"] is None)


def test_cli_texts_and_csv_column(tiny_classifier_dir, tmp_path, reference):
    output = tmp_path / "texts.jsonl"
    argv = ["predict", "--model", str(tiny_classifier_dir), "--texts", "bagus", LONG_TEXT, "--output", str(output)]
    assert cli.main(argv) == 0
    records = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert [record["text"] for record in records] == ["bagus", LONG_TEXT]
    assert_same_scores(records[1], reference(LONG_TEXT))

    source = tmp_path / "reviews.csv"
    source.write_text(
        'id,review\n1,"enak, murah, puas"\n2,"satu baris\nkedua baris"\n3,""\n4,too,many\n5,"kata ""kutipan"" ok"\n',
        encoding="utf-8",
    )
    output = tmp_path / "reviews_out.csv"
    argv = ["predict", "--model", str(tiny_classifier_dir), "--file", str(source), "--text_column", "review"]
    assert cli.main([*argv, "--output", str(output)]) == 0
    rows = read_csv(output)
    assert [row["text"] for row in rows] == [
        "enak, murah, puas",
        "satu baris\nkedua baris",
        "",
        "",
        'kata "kutipan" ok',
    ]
    assert [row["error"] for row in rows] == ["", "", "empty text", "line 6 has 3 columns, the header has 2", ""]


def test_cli_tsv_column(tiny_classifier_dir, tmp_path):
    source = tmp_path / "reviews.tsv"
    source.write_text('label\ttext\npositive\t"enak"\tsekali\nnegative\tjelek\n', encoding="utf-8")
    output = tmp_path / "out.csv"
    argv = ["predict", "--model", str(tiny_classifier_dir), "--file", str(source), "--text_column", "text"]
    assert cli.main([*argv, "--output", str(output)]) == 0
    rows = read_csv(output)
    assert [(row["text"], row["error"]) for row in rows] == [
        ("", "line 2 has 3 columns, the header has 2"),
        ("jelek", ""),
    ]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--texts", "a", "--file", "x.txt"], "--texts and --file were both given"),
        (["--texts", "a", "--output", "out.txt"], "cannot tell the format"),
        (["--texts", "a", "--format", "xml"], "--format 'xml' is unknown"),
        (["--submission", "pred.zip"], "name the prediction file"),
        (["--texts", "a", "--data_dir", "."], "--data_dir is only used with --submission"),
    ],
)
def test_cli_rejects_contradictory_options(tiny_classifier_dir, extra, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["predict", "--model", str(tiny_classifier_dir), *extra])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def check_submission(path: Path, texts: list[str], model_dir: Path) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "index,label"
    assert len(lines) == len(texts) + 1
    expected = [result["label"] for result in predict(texts, model=model_dir)]
    assert lines[1:] == [f"{index},{label}" for index, label in enumerate(expected)]
    with zipfile.ZipFile(path.with_suffix(".zip")) as bundle:
        assert bundle.namelist() == ["pred.txt"]
        assert bundle.read("pred.txt") == path.read_bytes()


def masked_texts(folder: Path) -> list[str]:
    return [line.rsplit("\t", 1)[0] for line in (folder / MASKED_TEST_FILE).read_text(encoding="utf-8").splitlines()]


def test_submission_on_masked_test(tiny_classifier_dir, tiny_smsa_dir, tmp_path, cache_dir):
    path = tmp_path / "submission" / "pred.txt"
    argv = ["predict", "--model", str(tiny_classifier_dir), "--submission", str(path), "--data_dir", str(tiny_smsa_dir)]
    assert cli.main([*argv, "--dataset_cache_dir", str(cache_dir)]) == 0
    check_submission(path, masked_texts(tiny_smsa_dir), tiny_classifier_dir)


@requires_smsa
def test_submission_on_real_smsa_has_500_rows(tiny_classifier_dir, tmp_path, cache_dir):
    path = tmp_path / "pred.txt"
    argv = ["predict", "--model", str(tiny_classifier_dir), "--submission", str(path), "--data_dir", str(SMSA_DIR)]
    assert cli.main([*argv, "--dataset_cache_dir", str(cache_dir)]) == 0
    texts = masked_texts(SMSA_DIR)
    assert len(texts) == 500
    check_submission(path, texts, tiny_classifier_dir)


def test_saved_folder_works_with_plain_pipeline_in_a_fresh_process(tiny_classifier_dir):
    script = textwrap.dedent(
        f"""
        import json, sys
        from transformers import pipeline
        classifier = pipeline("text-classification", model=sys.argv[1], truncation=True)
        print(json.dumps([classifier("makanan nya enak"), classifier({LONG_TEXT!r}, top_k=None)]))
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script, str(tiny_classifier_dir)], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    best, every = json.loads(done.stdout.strip().splitlines()[-1])
    assert best[0]["label"] in LABEL_NAMES
    assert sorted(item["label"] for item in every) == sorted(LABEL_NAMES)
