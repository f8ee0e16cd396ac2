"""benchmarks/packing.py on the tiny fixtures: its arguments, its correctness check of each packed path and the
figures it writes, never its timings."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    """benchmarks/ is no package (its scripts import each other as siblings), so the folder goes on sys.path."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module("packing")


def test_the_benchmark_checks_and_times_every_path_on_the_same_batches(bench, tiny_model_dir, tiny_smsa_dir, tmp_path):
    output = tmp_path / "packing.json"
    argv = [
        *("--model", str(tiny_model_dir), "--data_dir", str(tiny_smsa_dir), "--batch_size", "8"),
        *("--batches", "2", "--warmup", "1", "--runs", "2", "--mixed_precision", "no", "--threads", "1"),
        *("--max_seq_len", "64", "--output", str(output)),
    ]
    assert bench.main(argv) == 0
    written = json.loads(output.read_text())
    assert set(written["check"]) == {"custom", "stock_sdpa"}  # the packed paths, against the padded batch
    assert all(error <= bench.CHECK_TOLERANCE for error in written["check"].values())
    figures = written["samples_per_s"]["no"]
    assert list(figures) == list(bench.PATHS) and all(len(runs) == 2 and min(runs) > 0 for runs in figures.values())
    table = (tmp_path / "packing.md").read_text()
    assert table == written["table"] and "| custom packed (PackedCollator) | fp32 |" in table and "1.00x" in table
    assert written["system"]["cpu"]["model"] and len(written["system"]["load_average"]) == 3


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--runs", "0"], "--runs 0 must be a positive integer"),
        (["--warmup", "-1"], "--warmup -1 must be 0 or more"),
        (["--data_dir", "/nonexistent"], "has no train_preprocess.tsv"),
    ],
)
def test_the_benchmark_refuses_bad_arguments(bench, argv, message, capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(argv)
    assert message in capsys.readouterr().err
