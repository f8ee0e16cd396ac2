"""scripts/benchmark.py end to end on the tiny fixtures: the JSON it writes, never its timings."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from hf_indosent.benchmarking import Comparison, padding_fraction, render_table

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "benchmark.py"

# The tutorial's metrics warn when a barely trained model never predicts some class; that is expected here.
pytestmark = [
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning"),
    pytest.mark.usefixtures("one_torch_thread"),
]


@pytest.fixture(scope="module")
def benchmark():
    spec = importlib.util.spec_from_file_location("benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_writes_every_figure_with_ratios(benchmark, tiny_model_dir, tiny_smsa_dir, tmp_path, capsys):
    output = tmp_path / "benchmark.json"
    argv = [
        *("--model", str(tiny_model_dir), "--data_dir", str(tiny_smsa_dir)),
        *("--max_train_samples", "40", "--max_eval_samples", "30", "--batch_size", "8", "--epochs", "2"),
        *("--lr", "1e-3", "--max_seq_len", "64", "--matmul_size", "64", "--inference_batch_size", "4"),
        *("--inference_repeats", "2"),
        *("--work_dir", str(tmp_path / "work"), "--output", str(output)),
    ]
    assert benchmark.main(argv) == 0
    report = json.loads(output.read_text())

    assert set(report) >= {"system", "config", "matmul_peak_flops", "baseline", "ours", "inference", "targets"}
    assert report["system"]["torch_threads"] == 1 and len(report["system"]["load_average"]["averages"]) == 3
    assert report["baseline"]["n_train"] == report["ours"]["n_train"] == 40
    assert len(report["baseline"]["val_f1"]) == len(report["ours"]["val_f1"]) == 2
    assert report["inference"]["n_texts"] == 30
    for path in ("plain_pipeline", "predict"):  # the fastest of 2 timed passes counts
        figures = report["inference"][path]
        assert len(figures["all_seconds"]) == 2 and figures["seconds"] == min(figures["all_seconds"])

    rows = {row["figure"]: row for row in report["comparison"]}
    assert len(rows) == 10
    for row in rows.values():
        assert row["baseline"] > 0 and row["ours"] > 0, row
        assert row["ratio"] == pytest.approx(row["ours"] / row["baseline"])
        assert row["figure"] in report["table"]
    training = rows["training throughput"]
    assert (training["baseline"], training["ours"]) == (
        report["baseline"]["samples_per_s"],
        report["ours"]["samples_per_s"],
    )
    inference = rows["inference throughput (plain pipeline vs predict)"]
    assert inference["ours"] == report["inference"]["predict"]["texts_per_s"]

    targets = report["targets"]
    assert targets["training_speedup"] == pytest.approx(training["ratio"])
    assert targets["inference_speedup"] == pytest.approx(inference["ratio"])
    assert targets["f1_delta"] == pytest.approx(report["ours"]["val_f1"][-1] - report["baseline"]["val_f1"][-1])
    labels_identical = report["inference"]["labels_identical"]
    assert labels_identical == (report["inference"]["mismatched_indices"] == []) == targets["labels_identical"]
    assert "ours / baseline" in capsys.readouterr().out


def test_padding_fraction_by_hand():
    # batches padded to 4 and 4 positions: 16 computed, 11 real
    assert padding_fraction([2, 4, 4, 1], [[0, 1], [2, 3]]) == pytest.approx(5 / 16)
    assert padding_fraction([3, 3], [[0, 1]]) == 0


def test_ratio_is_ours_over_baseline_whichever_way_is_better():
    faster = Comparison("throughput", "samples/s", baseline=4.0, ours=10.0, higher_is_better=True)
    leaner = Comparison("padding", "%", baseline=0.5, ours=0.05, higher_is_better=False)
    assert (faster.ratio, leaner.ratio) == (2.5, pytest.approx(0.1))
    assert Comparison("data preparation", "s", baseline=None, ours=1.0, higher_is_better=False).ratio is None
    table = render_table([faster, leaner])
    assert "| throughput | samples/s | 4.000 | 10.0 | 2.50x |" in table
    assert "| padding | % | 50.0% | 5.0% | 0.10x |" in table
