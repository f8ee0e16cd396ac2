"""Issue 27, text inputs: one bad character costs its row, not the file; a file that is not text is refused as a whole;
``predict | head`` stops when the reader goes.

The text-encoding guard (:func:`hf_indosent.inference.inputs.text_problem`, called by ``prediction.input_error`` for
every row
of every predictor) is exercised through every way in: arguments, stdin, txt/csv/jsonl/parquet files, ``--dataset``,
``predict_dataset``, the Python API, the demo and predict at scale. The bad row is always row 1 of
[good, bad, good, good]: it keeps its place with an error, and the others keep the labels they get alone.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import ROOT

from hf_indosent import cli, predict, predict_dataset
from hf_indosent.data.parsing import DataFormatError
from hf_indosent.data.smsa import load_smsa
from hf_indosent.inference.inputs import open_input, text_problem
from hf_indosent.inference.predictor import Predictor

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GOOD = ["makanan nya enak sekali", "pelayanan nya kasar dan lambat", "tempat nya bersih"]
SURROGATE = "enak \ud83d sekali"  # what json.loads makes of "enak \ud83d sekali"
SURROGATE_ERROR = "text is not valid Unicode: lone surrogate \\ud83d at character 5"
BYTE_ERROR = "text is not valid UTF-8: byte \\xe9 at character 3"  # b"caf\xe9 ..." read with surrogateescape
CHILD_ENV = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def predictor(tiny_classifier_dir) -> Predictor:
    return Predictor(tiny_classifier_dir, batch_size=2, chunk_size=8)


@pytest.fixture(scope="module")
def expected(predictor) -> list[str]:
    """The labels of the good texts, predicted without any bad row beside them."""
    return [result["label"] for result in predictor(GOOD)]


def check_rows(labels: list, errors: list, expected: list[str], error: str, texts: list | None = None) -> None:
    """Row 1 is the bad one: no label, its error; rows 0, 2, 3 keep their labels."""
    assert len(labels) == len(errors) == 4
    assert labels[1] in (None, "") and errors[1] == error
    assert [labels[0], labels[2], labels[3]] == expected
    assert [errors[0], errors[2], errors[3]] in ([None] * 3, [""] * 3)
    if texts is not None:
        assert [texts[0], texts[2], texts[3]] == GOOD


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def run_child(*argv: str | bytes, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hf_indosent", *argv],
        cwd=ROOT,
        env={**os.environ, **CHILD_ENV},
        input=stdin,
        capture_output=True,
        timeout=240,
    )


def invalid_utf8_strings(values: list[bytes]) -> pa.Array:
    """An Arrow string array holding these bytes unchecked, as a writer that does not validate leaves them."""
    raw = pa.array(values, type=pa.binary())
    return pa.Array.from_buffers(pa.string(), len(values), raw.buffers())


ARROW_BAD = [GOOD[0].encode(), b"caf\xe9 enak", GOOD[1].encode(), GOOD[2].encode()]
JSONL = "".join(json.dumps({"text": text}) + "\n" for text in [GOOD[0], SURROGATE, *GOOD[1:]])
"""JSON Lines whose second record holds the JSON escape "\\ud83d" (json.dumps writes a lone surrogate that way)."""


# --------------------------------------------------------------------------------------------------------------
# 1. One bad character costs its row


def test_the_guard_names_the_character_and_its_position():
    assert text_problem("enak sekali") is None
    assert text_problem("\U0001f600 emoji is fine") is None
    assert text_problem(SURROGATE) == SURROGATE_ERROR
    assert text_problem("caf\udce9 enak") == BYTE_ERROR


def test_python_api_keeps_every_other_row(tiny_classifier_dir, expected):
    results = predict([GOOD[0], SURROGATE, GOOD[1], GOOD[2]], model=tiny_classifier_dir)
    check_rows([r["label"] for r in results], [r["error"] for r in results], expected, SURROGATE_ERROR)
    assert results[1]["scores"] is None


def test_jsonl_with_a_json_escaped_lone_surrogate(tiny_classifier_dir, tmp_path, expected, capsys):
    source = tmp_path / "reviews.jsonl"
    source.write_text(JSONL, encoding="utf-8")
    output = tmp_path / "out.jsonl"
    argv = ["predict", "--model", str(tiny_classifier_dir), "--file", str(source), "--output", str(output)]
    assert cli.main(argv) == 0
    rows = read_jsonl(output)
    texts = [row["text"] for row in rows]
    check_rows([row["label"] for row in rows], [row["error"] for row in rows], expected, SURROGATE_ERROR, texts)
    assert texts[1] == "enak \\ud83d sekali"  # written as the escape the error names: the file stays valid UTF-8
    assert "1 of 4 rows could not be classified" in capsys.readouterr().err


def test_csv_row_with_bytes_that_are_not_utf8(tiny_classifier_dir, tmp_path, expected):
    source = tmp_path / "reviews.csv"
    source.write_bytes(
        b'id,review\n1,makanan nya enak sekali\n2,"caf\xe9 enak"\n3,pelayanan nya kasar dan lambat\n'
        b"4,tempat nya bersih\n"
    )
    output = tmp_path / "out.csv"
    argv = ["predict", "--model", str(tiny_classifier_dir), "--file", str(source), "--text_column", "review"]
    assert cli.main([*argv, "--output", str(output)]) == 0
    with open(output, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    texts = [row["text"] for row in rows]
    check_rows([row["label"] for row in rows], [row["error"] for row in rows], expected, BYTE_ERROR, texts)
    assert texts[1] == "caf\\xe9 enak"


def test_stdin_lines_that_are_not_utf8(tiny_classifier_dir, tmp_path, expected, monkeypatch):
    """stdin is decoded line by line: an encoded surrogate (b"\\xed\\xa0\\xbd") is not UTF-8 and costs its line."""
    raw = b"\n".join([GOOD[0].encode(), b"enak \xed\xa0\xbd sekali", GOOD[1].encode(), GOOD[2].encode()])
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8"))
    output = tmp_path / "out.jsonl"
    assert cli.main(["predict", "--model", str(tiny_classifier_dir), "--output", str(output)]) == 0
    rows = read_jsonl(output)
    error = rows[1]["error"]
    assert error.startswith("line 2 is not valid UTF-8")
    check_rows([row["label"] for row in rows], [row["error"] for row in rows], expected, error)


def test_argv_bytes_that_are_not_utf8(tiny_classifier_dir, expected):
    """Python decodes argv with surrogateescape: b"\\xe9" on the command line is the lone surrogate U+DCE9."""
    texts = [GOOD[0].encode(), b"caf\xe9 enak", GOOD[1].encode(), GOOD[2].encode()]
    result = run_child("predict", "--model", str(tiny_classifier_dir), "--device", "cpu", "--texts", *texts)
    assert result.returncode == 0, result.stderr.decode()
    rows = [json.loads(line) for line in result.stdout.decode("utf-8").splitlines()]
    texts_out = [row["text"] for row in rows]
    check_rows([row["label"] for row in rows], [row["error"] for row in rows], expected, BYTE_ERROR, texts_out)
    assert b"1 of 4 rows could not be classified" in result.stderr and b"Traceback" not in result.stderr


def test_predict_dataset_with_a_string_that_is_not_utf8(tiny_classifier_dir, expected):
    """Arrow does not check the UTF-8 of strings written by others; before, one such row failed the whole map."""
    dataset = datasets.Dataset(pa.table({"text": invalid_utf8_strings(ARROW_BAD), "label": [0, 1, 2, 0]}))
    labelled = predict_dataset(tiny_classifier_dir, dataset.with_format("numpy", columns=["label"]))
    assert labelled.format["type"] == "numpy" and "pred_label" in labelled.format["columns"]
    labelled = labelled.with_format(None)
    check_rows(labelled["pred_label"], labelled["pred_error"], expected, BYTE_ERROR)


@pytest.mark.parametrize("kind", ["jsonl", "parquet", "dataset"])
def test_predict_at_scale_keeps_every_other_row(kind, tiny_classifier_dir, tmp_path, expected):
    """Pieces of 2 rows, written as Parquet: the bad row is an error in its piece, and the run finishes."""
    if kind == "jsonl":
        source = tmp_path / "in.jsonl"
        source.write_text(JSONL, encoding="utf-8")
        argv, error, shown = ["--file", str(source)], SURROGATE_ERROR, "enak \\ud83d sekali"
    elif kind == "parquet":
        pq.write_table(pa.table({"text": invalid_utf8_strings(ARROW_BAD)}), tmp_path / "in.parquet")
        argv, error, shown = ["--file", str(tmp_path / "in.parquet")], BYTE_ERROR, "caf\\xe9 enak"
    else:
        datasets.Dataset(pa.table({"text": invalid_utf8_strings(ARROW_BAD)})).save_to_disk(tmp_path / "saved")
        argv, error, shown = ["--dataset", str(tmp_path / "saved")], BYTE_ERROR, "caf\\xe9 enak"
    output = tmp_path / "out.parquet"
    command = ["predict", "--model", str(tiny_classifier_dir), *argv, "--output", str(output), "--piece_size", "2"]
    assert cli.main([*command, "--include_text", "true"]) == 0
    table = pq.read_table(output).to_pydict()
    check_rows(table["label"], table["error"], expected, error, table["text"])
    assert table["text"][1] == shown


def test_a_text_the_tokenizer_refuses_costs_its_row_only(predictor, expected, monkeypatch):
    """Whatever else a tokenizer cannot take: the chunk is retried text by text, and only that text fails."""
    tokenizer = predictor.pipe.tokenizer

    class Picky:
        def __getattr__(self, name):
            return getattr(tokenizer, name)

        def __call__(self, texts, **kwargs):
            if "tidak bisa" in texts:
                raise ValueError("cannot take\nthis one")
            return tokenizer(texts, **kwargs)

    monkeypatch.setattr(predictor.pipe, "tokenizer", Picky())
    results = predictor([GOOD[0], "tidak bisa", GOOD[1], GOOD[2]])
    error = "the tokenizer cannot take this text (ValueError: cannot take this one)"
    check_rows([r["label"] for r in results], [r["error"] for r in results], expected, error)


def demo_functions(model: Path) -> dict:
    """The demo's event functions by API name, called here directly (no server)."""
    pytest.importorskip("gradio")
    from hf_indosent.sharing.demo import build_app

    app = build_app(model, device="cpu")
    return {function.api_name: function.fn for function in app.fns.values()}


@pytest.fixture(scope="module")
def demo(tiny_classifier_dir) -> dict:
    return demo_functions(tiny_classifier_dir)


def test_demo_text_box_and_upload(demo, tmp_path, expected):
    import gradio

    with pytest.raises(gradio.Error, match="Cannot classify this text: text is not valid Unicode: lone surrogate"):
        demo["classify"](SURROGATE)
    upload = tmp_path / "reviews.csv"
    upload.write_bytes(b"review\n" + b"\n".join(ARROW_BAD) + b"\n")
    with pytest.warns(UserWarning, match="1 of 4 rows could not be classified"):  # gr.Warning outside a request
        output, summary = demo["classify_file"](str(upload), "review")
    with open(output, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    check_rows([row["label"] for row in rows], [row["error"] for row in rows], expected, BYTE_ERROR)
    assert "3 of 4 rows classified" in summary


# --------------------------------------------------------------------------------------------------------------
# 2. A file that is not text is refused as a whole, naming it


def gzip_bytes() -> bytes:
    return gzip.compress("\n".join(GOOD).encode())


def zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("reviews.txt", "\n".join(GOOD))
    return buffer.getvalue()


NOT_TEXT = {
    "reviews.txt.gz": (gzip_bytes, "gzip-compressed (decompress it first"),
    "reviews.txt": (gzip_bytes, "gzip-compressed (decompress it first"),  # told by the bytes, not the name
    "reviews.zip": (zip_bytes, "a zip archive (unzip it first"),
    "photo.txt": (lambda: b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), "a PNG image"),
    "random.tsv": (lambda: os.urandom(4096), "looks like a binary file, not UTF-8 text"),
    "utf16.txt": (lambda: "\n".join(GOOD).encode("utf-16"), "UTF-16 text"),
}


@pytest.mark.parametrize("name", list(NOT_TEXT))
def test_file_that_is_not_text_is_refused_before_any_prediction(name, tiny_classifier_dir, tmp_path, capsys):
    content, fragment = NOT_TEXT[name]
    source = tmp_path / name
    source.write_bytes(content())
    model = str(tiny_classifier_dir)
    for extra in ([], ["--resumable"]):  # in one go, and at scale
        output = tmp_path / "out.csv"
        assert cli.main(["predict", "--model", model, "--file", str(source), "--output", str(output), *extra]) == 1
        err = capsys.readouterr().err
        assert str(source) in err and fragment in err and len(err.strip().splitlines()) == 1, err
        assert not output.exists() and not Path(f"{output}.parts").exists()


def test_evaluate_and_the_demo_refuse_a_compressed_file(tiny_classifier_dir, demo, tmp_path, cache_dir, capsys):
    import gradio

    source = tmp_path / "labelled.tsv"
    source.write_bytes(gzip.compress(b"text\tlabel\nenak\tpositive\n"))
    argv = ["evaluate", "--model", str(tiny_classifier_dir), "--file", str(source), "--output_dir", str(tmp_path / "e")]
    assert cli.main([*argv, "--dataset_cache_dir", str(cache_dir)]) == 1
    err = capsys.readouterr().err
    assert str(source) in err and "gzip-compressed (decompress it first" in err
    with pytest.raises(gradio.Error, match=r"labelled.tsv: looks like a binary file: it is gzip-compressed"):
        demo["classify_file"](str(source), "text")


def test_a_folder_or_a_symlink_loop_says_what_it_is(tmp_path, cache_dir):
    loop = tmp_path / "loop.txt"
    loop.symlink_to(loop)
    dangling = tmp_path / "dangling.txt"
    dangling.symlink_to(tmp_path / "gone.txt")
    cases = {
        tmp_path: "is a directory (a folder), not a file",
        loop: "is a symbolic link loop",
        dangling: f"is a symbolic link to {str(tmp_path / 'gone.txt')!r}, which does not exist",
    }
    for path, fragment in cases.items():
        with pytest.raises(DataFormatError, match=re.escape(fragment)) as info:
            open_input(str(path))  # predict, predict at scale and the demo open files here
        assert info.value.path == str(path)
        with pytest.raises(DataFormatError, match=re.escape(fragment)):  # evaluate and training read files here
            load_smsa(data_files={"validation": path}, cache_dir=cache_dir)


def test_text_with_a_stray_nul_or_latin1_letter_is_still_read_row_by_row(tmp_path):
    source = tmp_path / "mixed.txt"
    source.write_bytes(b"enak\x00sekali\ncaf\xe9\nbersih\n")
    rows = list(open_input(str(source)).rows())
    assert rows[0] == "enak\x00sekali" and rows[2] == "bersih" and "not valid UTF-8" in rows[1].reason


# --------------------------------------------------------------------------------------------------------------
# 3. predict | head


COUNTING_PREDICT = """
import os, sys, time
from pathlib import Path
from transformers import TextClassificationPipeline
from hf_indosent.cli import main

counter, done, original = Path(sys.argv[1]), [0], TextClassificationPipeline.forward

def counted(self, *args, **kwargs):  # one model batch
    time.sleep(0.02)  # that takes time, as a real model's does
    result = original(self, *args, **kwargs)
    done[0] += 1
    counter.with_suffix(".tmp").write_text(str(done[0]))
    os.replace(counter.with_suffix(".tmp"), counter)
    return result

TextClassificationPipeline.forward = counted
sys.exit(main(["predict", *sys.argv[2:]]))
"""


def test_predict_into_head_stops_within_a_batch_of_the_reader_leaving(tiny_classifier_dir, tmp_path):
    """The reader takes one line and closes the pipe: predict stops before its next model batch (before, it
    predicted a whole chunk more), quietly, with no traceback and no "Exception ignored" at shutdown."""
    source = tmp_path / "big.txt"
    source.write_text("makanan nya enak sekali\n" * 5000, encoding="utf-8")
    counter = tmp_path / "batches"
    argv = ["--model", str(tiny_classifier_dir), "--file", str(source), "--chunk_size", "64", "--batch_size", "1"]
    process = subprocess.Popen(
        [sys.executable, "-c", COUNTING_PREDICT, str(counter), *argv, "--device", "cpu"],
        cwd=ROOT,
        env={**os.environ, **CHILD_ENV},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert json.loads(process.stdout.readline())["index"] == 0
        at_close = int(counter.read_text())
        process.stdout.close()  # the reader goes, like head after its line
        left = time.monotonic()
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert time.monotonic() - left < 30  # the input would take minutes
    assert int(counter.read_text()) - at_close <= 2  # one batch under way, at most one more started
    assert process.returncode in (0, 141), err.decode()
    assert b"Traceback" not in err and b"Broken pipe" not in err and b"Exception ignored" not in err, err.decode()


def test_evaluate_refuses_a_row_the_model_could_not_take_by_its_number():
    """A labelled row whose text the tokenizer refused cannot be scored as any label without changing the metrics:
    evaluate names it (the one-line error) instead of a KeyError on its missing label."""
    import datasets

    from hf_indosent.inference.base import ChunkedPredictor, error_result
    from hf_indosent.inference.evaluate import evaluate_dataset

    class OneBadRow(ChunkedPredictor):
        label_names, max_length, chunk_size = ["positive", "negative"], 8, 4

        def _predict_chunk(self, chunk):
            good = {"label": "positive", "scores": {"positive": 0.9, "negative": 0.1}, "error": None}
            return [error_result("the tokenizer cannot take this text") if text == "bad" else good for text in chunk]

    data = datasets.Dataset.from_dict({"text": ["baik", "bad", "baik"], "label": [0, 1, 0]})
    with pytest.raises(ValueError, match=r"example 2 of the data cannot be classified \(the tokenizer cannot take"):
        evaluate_dataset(OneBadRow(), data)
