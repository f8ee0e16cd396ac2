"""predict at scale: every input kind, several processes in input order, resume after SIGKILL, refusals, atomicity."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import interrupt_after_pieces, make_rows

from hf_indosent import cli, predict, predict_dataset
from hf_indosent.inference import inputs as textio
from hf_indosent.inference import outputs
from hf_indosent.inference.at_scale import WORK_SUFFIX

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_2_CPU = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
CHILD_ENV = {"ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def sample_texts(n: int, seed: int) -> list[str]:
    """Reviews of varied lengths, some with a comma or a quote (CSV quoting is exercised)."""
    texts = [" ".join([text] * (1 + index % 4)) for index, (text, _) in enumerate(make_rows(n, seed=seed))]
    return [text + (', "kan"' if index % 5 == 0 else "") for index, text in enumerate(texts)]


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def predict_argv(model: Path, source: Path, output: Path, *extra: str) -> list[str]:
    return ["--model", str(model), "--file", str(source), "--output", str(output), "--chunk_size", "16", *extra]


def run_child(*command: str, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*(launcher or [sys.executable]), *command],
        cwd=ROOT,
        env={**os.environ, **CHILD_ENV},
        capture_output=True,
        text=True,
        timeout=240,
    )


# --------------------------------------------------------------------------------------------------------------
# Several processes


@pytest.mark.slow
def test_two_processes_keep_input_order_with_a_slow_process(tiny_classifier_dir, tmp_path, capsys):
    """2 CPU processes, process 0 slowed down: the rows, labels and scores of one process, in input order; the bad
    row in process 1's shard is reported by its global row number."""
    lines = [text.encode() for text in sample_texts(300, seed=21)]
    lines[217] = b"\xff\xfe rusak"  # row 217 is in piece 5 (rows 200-239): process 1's
    source = write_lines(tmp_path / "reviews.txt", lines)
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    pieces = ("--piece_size", "40")
    assert cli.main(["predict", *predict_argv(tiny_classifier_dir, source, one, "--resumable", *pieces)]) == 0
    capsys.readouterr()

    launcher = [*LAUNCH_2_CPU, "--main_process_port", "29531"]
    hooks = ["tests/predict_crash_runner.py", "--slow_rank", "0", "--delay", "0.6", "--"]
    done = run_child(*hooks, *predict_argv(tiny_classifier_dir, source, two, *pieces), launcher=launcher)
    assert done.returncode == 0, done.stderr[-3000:]

    expected, rows = read_csv(one), read_csv(two)
    assert [row["index"] for row in rows] == [str(index) for index in range(300)]
    assert [(row["text"], row["label"], row["error"]) for row in rows] == [
        (row["text"], row["label"], row["error"]) for row in expected
    ]
    score_columns = [name for name in rows[0] if name.startswith("score")]
    assert score_columns == ["score", "score_positive", "score_neutral", "score_negative"]
    for row, reference in zip(rows, expected, strict=True):
        for name in score_columns:
            assert float(row[name] or "nan") == pytest.approx(float(reference[name] or "nan"), abs=1e-4, nan_ok=True)
    assert rows[217]["error"] == "line 218 is not valid UTF-8 (invalid start byte at byte 0)"
    assert not (tmp_path / f"two.csv{WORK_SUFFIX}").exists()

    summary = done.stderr
    assert f"wrote {two} (300 rows; 1 could not be classified, the first at row 217: line 218" in summary
    for index in (0, 1):
        line = next(line for line in summary.splitlines() if line.strip().startswith(f"process {index} "))
        assert ": 160 rows," in line if index == 0 else ": 140 rows," in line
    # process 0 was held back before each of its 4 pieces (not compared by speed: the machine may be busy)
    assert summary.count("slow_rank 0: 0.6 s before a piece") == 4
    assert "rows/s" in summary


def test_one_device_for_every_process_is_refused(tiny_classifier_dir):
    from hf_indosent.inference.arguments import InferenceArguments
    from hf_indosent.inference.at_scale import process_device

    state = SimpleNamespace(num_processes=2, device=torch.device("cpu"))
    inference = InferenceArguments(model=str(tiny_classifier_dir), device="cuda:0")
    with pytest.raises(ValueError, match="would put all 2 processes on that one device: drop --device"):
        process_device(state, inference)
    assert process_device(state, InferenceArguments(model=str(tiny_classifier_dir))) == torch.device("cpu")


# --------------------------------------------------------------------------------------------------------------
# Resuming


def test_sigkill_then_rerun_gives_the_bytes_of_an_uninterrupted_run(tiny_classifier_dir, tmp_path, capsys):
    source = write_lines(tmp_path / "reviews.txt", [text.encode() for text in sample_texts(200, seed=22)])
    whole, resumed = tmp_path / "whole.csv", tmp_path / "out" / "resumed.csv"
    extra = ("--resumable", "--piece_size", "30")
    assert cli.main(["predict", *predict_argv(tiny_classifier_dir, source, whole, *extra)]) == 0

    runner = ("tests/predict_crash_runner.py", "--kill_after", "3", "--")
    killed = run_child(*runner, *predict_argv(tiny_classifier_dir, source, resumed, *extra))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    work = resumed.with_name(resumed.name + WORK_SUFFIX)
    assert not resumed.exists()
    assert sorted(path.name for path in work.glob("piece-*.csv")) == [f"piece-{n:08d}.csv" for n in range(3)]

    capsys.readouterr()
    assert cli.main(["predict", *predict_argv(tiny_classifier_dir, source, resumed, *extra)]) == 0
    assert resumed.read_bytes() == whole.read_bytes()
    assert not work.exists()
    err = capsys.readouterr().err
    assert "90 rows were committed by an earlier run (resumed)" in err


def test_interrupted_parquet_run_resumes_to_the_same_bytes(tiny_classifier_dir, tmp_path, monkeypatch):
    source = write_lines(tmp_path / "reviews.txt", [text.encode() for text in sample_texts(120, seed=23)])
    whole, resumed = tmp_path / "whole.parquet", tmp_path / "resumed.parquet"
    assert cli.main(["predict", *predict_argv(tiny_classifier_dir, source, whole, "--piece_size", "25")]) == 0
    with monkeypatch.context() as patch:
        interrupt_after_pieces(patch, 2)
        assert cli.main(["predict", *predict_argv(tiny_classifier_dir, source, resumed, "--piece_size", "25")]) == 130
    assert not resumed.exists()
    assert cli.main(["predict", *predict_argv(tiny_classifier_dir, source, resumed, "--piece_size", "25")]) == 0
    assert resumed.read_bytes() == whole.read_bytes()
    table = pq.read_table(resumed)
    assert table.column_names == ["index", "label", "score", "error"]  # Parquet: no text, no per-label scores
    assert table.column("index").to_pylist() == list(range(120))
    assert table.num_rows == 120 and pq.ParquetFile(resumed).metadata.num_row_groups == 5


def test_a_different_run_is_refused_until_overwrite(tiny_classifier_dir, tmp_path, monkeypatch, capsys):
    source = write_lines(tmp_path / "reviews.txt", [text.encode() for text in sample_texts(90, seed=24)])
    output = tmp_path / "out.jsonl"
    argv = ["predict", *predict_argv(tiny_classifier_dir, source, output, "--resumable", "--piece_size", "20")]
    with monkeypatch.context() as patch:
        interrupt_after_pieces(patch, 2)
        assert cli.main(argv) == 130
    other_model = shutil.copytree(tiny_classifier_dir, tmp_path / "other-model")
    capsys.readouterr()

    def refused(*changes: str) -> str:
        assert cli.main([*argv, *changes]) == 1
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "--overwrite to start again" in err
        assert f"{output}{WORK_SUFFIX} holds an unfinished run that differs from this one in" in err
        return err

    assert "arguments --piece_size 20 -> 10" in refused("--piece_size", "10")
    assert "arguments --chunk_size 16 -> 8" in refused("--chunk_size", "8")
    assert "model path" in refused("--model", str(other_model))
    with open(source, "ab") as handle:
        handle.write(b"satu baris lagi\n")
    assert "input size" in refused()

    assert cli.main([*argv, "--overwrite"]) == 0
    records = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert [record["index"] for record in records] == list(range(91))
    assert records[-1]["text"] == "satu baris lagi"
    scores = ["score_positive", "score_neutral", "score_negative"]
    assert list(records[0]) == ["index", "text", "label", "score", *scores, "error"]
    assert not output.with_name(output.name + WORK_SUFFIX).exists()


def test_an_option_the_backend_ignores_does_not_block_the_resume(tiny_classifier_dir, tmp_path, monkeypatch):
    """The int8 fallback margin only changes onnx-int8's output: a torch run resumes with another one (the export
    side, where it is refused, is in test_export.py)."""
    source = write_lines(tmp_path / "reviews.txt", [text.encode() for text in sample_texts(70, seed=26)])
    whole, resumed = tmp_path / "whole.jsonl", tmp_path / "resumed.jsonl"
    argv = ["--resumable", "--piece_size", "20", "--backend", "torch"]
    assert cli.main(["predict", *predict_argv(tiny_classifier_dir, source, whole, *argv)]) == 0
    with monkeypatch.context() as patch:
        interrupt_after_pieces(patch, 2)
        assert cli.main(["predict", *predict_argv(tiny_classifier_dir, source, resumed, *argv)]) == 130
    margin = ["--int8_fallback_margin", "0.1"]
    assert cli.main(["predict", *predict_argv(tiny_classifier_dir, source, resumed, *argv, *margin)]) == 0
    assert resumed.read_bytes() == whole.read_bytes()


# --------------------------------------------------------------------------------------------------------------
# Inputs


TEXTS = sample_texts(40, seed=25)


def write_input(kind: str, folder: Path) -> list[str]:
    """The same texts as input ``kind``; returns the extra predict arguments that read it."""
    if kind == "txt":
        return ["--file", str(write_lines(folder / "in.txt", [text.encode() for text in TEXTS]))]
    if kind in ("csv", "tsv"):
        path = folder / f"in.{kind}"
        with open(path, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, delimiter="," if kind == "csv" else "\t", quoting=csv.QUOTE_MINIMAL)
            writer.writerows([["id", "review"], *([index, text] for index, text in enumerate(TEXTS))])
        if kind == "tsv":  # SmSA-style TSV: no quoting at all
            path.write_text("id\treview\n" + "".join(f"{i}\t{text}\n" for i, text in enumerate(TEXTS)), "utf-8")
        return ["--file", str(path), "--text_column", "review"]
    if kind == "jsonl":
        path = folder / "in.jsonl"
        path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(TEXTS)), "utf-8")
        return ["--file", str(path)]
    table = pa.table({"id": list(range(len(TEXTS))), "review": TEXTS})
    if kind == "parquet":
        pq.write_table(table, folder / "in.parquet", row_group_size=7)
        return ["--file", str(folder / "in.parquet"), "--text_column", "review"]
    splits = datasets.DatasetDict({"test": datasets.Dataset(table)})
    splits.save_to_disk(folder / "saved")
    return ["--dataset", str(folder / "saved"), "--split", "test", "--text_column", "review"]


@pytest.mark.parametrize("kind", ["txt", "csv", "tsv", "jsonl", "parquet", "save_to_disk"])
def test_every_input_kind_gives_the_same_labels(kind, tiny_classifier_dir, tmp_path):
    output = tmp_path / "out.jsonl"
    argv = ["predict", "--model", str(tiny_classifier_dir), *write_input(kind, tmp_path), "--output", str(output)]
    assert cli.main(argv) == 0
    records = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert [record["text"] for record in records] == TEXTS
    expected = [result["label"] for result in predict(TEXTS, model=tiny_classifier_dir)]
    assert [record["label"] for record in records] == expected


def test_hub_dataset_is_streamed(tiny_classifier_dir, tmp_path, monkeypatch):
    calls = []

    def load_dataset(name, split=None, streaming=False):
        calls.append((name, split, streaming))
        return datasets.Dataset.from_dict({"text": TEXTS}).to_iterable_dataset()

    monkeypatch.setattr(textio.datasets, "load_dataset", load_dataset)
    output = tmp_path / "out.parquet"
    argv = ["predict", "--model", str(tiny_classifier_dir), "--dataset", "someone/reviews", "--split", "train"]
    assert cli.main([*argv, "--output", str(output), "--include_text", "true"]) == 0
    assert calls[0] == ("someone/reviews", "train", True)
    assert pq.read_table(output).column("text").to_pylist() == TEXTS


def test_input_errors_name_the_file_row_and_fix(tmp_path):
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_bytes(b'{"review": "a"}\n')
    with pytest.raises(ValueError, match=r"in\.jsonl, line 1: the first record has no field 'text' .*Set --text_col"):
        list(textio.open_input(str(jsonl)).rows())
    jsonl.write_bytes(b'{"text": "a"}\n\n[1]\n{"text": "b"\n{"other": 1}\n\xff\n')
    assert [getattr(row, "reason", row) for row in textio.open_input(str(jsonl)).rows()] == [
        "a",
        "line 2 is empty",
        "line 3 is not a JSON object",
        "line 4 is not valid JSON (Expecting ',' delimiter at column 13)",
        "line 5 has no field 'text'",
        "line 6 is not valid UTF-8 (invalid start byte at byte 0)",
    ]
    parquet = tmp_path / "in.parquet"
    pq.write_table(pa.table({"review": ["a"]}), parquet)
    with pytest.raises(ValueError, match=r"in\.parquet: has no column 'text' \(columns: \['review'\]\)\. Set --text"):
        list(textio.open_input(str(parquet)).rows())
    (tmp_path / "fake.parquet").write_text("not parquet")
    with pytest.raises(ValueError, match=r"fake\.parquet: cannot be read as Parquet"):
        list(textio.open_input(str(tmp_path / "fake.parquet")).rows())
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["a"]})}).save_to_disk(tmp_path / "saved")
    with pytest.raises(ValueError, match=r"saved: holds the splits \['train'\]\. Pick one with --split"):
        textio.open_input(dataset=str(tmp_path / "saved"))
    with pytest.raises(ValueError, match=r"has no column 'review' \(columns: \['text'\]\)"):
        textio.open_input(dataset=str(tmp_path / "saved"), split="train", text_column="review")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--texts", "a", "--resumable", "--output", "o.csv"], "--resumable needs --file or --dataset"),
        (["--file", __file__, "--resumable"], "--resumable needs --output"),
        (["--file", __file__, "--output", "o.parquet", "--piece_size", "0"], "--piece_size 0 must be a positive"),
        (["--texts", "a", "--split", "test"], "--split 'test' is the split of a --dataset"),
        (["--texts", "a", "--output", "o.parquet"], "Parquet output needs --file or --dataset"),
        (["--dataset", "someone/reviews"], "is not a local folder, so it comes from the Hub: add --split"),
    ],
)
def test_contradictory_options_are_refused(tiny_classifier_dir, extra, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["predict", "--model", str(tiny_classifier_dir), *extra])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_piecewise_options_without_pieces_are_refused(tiny_classifier_dir, tmp_path, capsys):
    argv = ["predict", "--model", str(tiny_classifier_dir), "--texts", "a", "--output", str(tmp_path / "o.csv")]
    assert cli.main([*argv, "--include_text", "false"]) == 1
    assert "add --resumable, or drop them" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------------------
# Atomic output of the one-go path


def interrupt(kind: str) -> None:
    if kind == "ctrl-c":
        raise KeyboardInterrupt
    if kind == "sigterm":
        os.kill(os.getpid(), signal.SIGTERM)
    raise OSError(28, "No space left on device", "out.csv")


@pytest.mark.parametrize(("kind", "code"), [("ctrl-c", 130), ("sigterm", 143), ("error", 1)])
def test_interrupted_output_keeps_the_previous_file(kind, code, tiny_classifier_dir, tmp_path, monkeypatch):
    output = tmp_path / "out.csv"
    output.write_bytes(b"index,label\n0,previous\n")
    original, written = outputs.ResultWriter.write, []

    def write(self, *args):
        written.append(1)
        if len(written) == 5:
            interrupt(kind)
        original(self, *args)

    monkeypatch.setattr(outputs.ResultWriter, "write", write)
    argv = ["predict", "--model", str(tiny_classifier_dir), "--texts", *TEXTS[:10], "--output", str(output)]
    assert cli.main(argv) == code
    assert output.read_bytes() == b"index,label\n0,previous\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out.csv"]


def test_missing_output_folders_are_created(tiny_classifier_dir, tmp_path):
    output = tmp_path / "a" / "b" / "out.csv"
    assert cli.main(["predict", "--model", str(tiny_classifier_dir), "--texts", "bagus", "--output", str(output)]) == 0
    assert [row["text"] for row in read_csv(output)] == ["bagus"]


# --------------------------------------------------------------------------------------------------------------
# Python API


def test_predict_dataset_adds_prediction_columns(tiny_classifier_dir):
    dataset = datasets.Dataset.from_dict({"text": [*TEXTS[:12], ""], "label": [0] * 13})
    labelled = predict_dataset(tiny_classifier_dir, dataset)
    assert labelled.column_names == [
        "text",
        "label",
        "pred_label",
        "pred_score",
        "pred_score_positive",
        "pred_score_neutral",
        "pred_score_negative",
        "pred_error",
    ]
    results = predict(dataset["text"], model=tiny_classifier_dir)
    assert labelled["pred_label"] == [result["label"] for result in results]
    assert labelled["pred_error"][-1] == "empty text" and labelled["pred_score"][-1] is None
    assert labelled["pred_score"][0] == pytest.approx(max(results[0]["scores"].values()))
    with pytest.raises(ValueError, match=r"already has the columns \['label'\]: pass another prefix"):
        predict_dataset(tiny_classifier_dir, dataset, prefix="", include_scores=False)
