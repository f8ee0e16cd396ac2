"""benchmarks/inference_backends.py end to end on the tiny classifier: every path runs, the reference agrees with
itself, and the int8 fallback row reports the share of texts it ran again in fp32."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_backends_benchmark_smoke_run(tiny_classifier_dir, tiny_smsa_dir, tmp_path, monkeypatch, capsys):
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    benchmark = importlib.import_module("inference_backends")
    output = tmp_path / "backends.json"
    argv = ["inference_backends.py", "--model", str(tiny_classifier_dir), "--data_dir", str(tiny_smsa_dir)]
    argv += ["--work_dir", str(tmp_path / "work"), "--output", str(output), "--repeats", "1", "--threads", "1"]
    argv += ["--int8_fallback_margin", "0.999"]  # every text is a close call: all of them run again in fp32
    monkeypatch.setattr(sys, "argv", argv)
    benchmark.main()
    report = json.loads(output.read_text(encoding="utf-8"))
    rows = {row["path"]: row for row in report["rows"]}
    assert report["texts"] == 45
    assert set(rows) == {
        "pipeline(batch_size=32)",
        "Predictor torch",
        "Predictor torch-bf16",
        "Predictor torch-int8",
        "Predictor onnx",
        "Predictor onnx-int8 alone",
        "Predictor onnx-int8, fp32 below 0.999",
    }
    assert rows["Predictor torch"]["label_agreement"] == 1.0
    assert rows["Predictor torch"]["max_abs_score_difference"] == 0
    assert rows["pipeline(batch_size=32)"]["label_agreement"] == 1.0  # the same model, unbatched tricks aside
    assert rows["Predictor onnx-int8 alone"]["recomputed_in_fp32"] is None
    fallback, alone = rows["Predictor onnx-int8, fp32 below 0.999"], rows["Predictor onnx-int8 alone"]
    assert fallback["recomputed_in_fp32"] == 1.0
    assert fallback["max_abs_score_difference"] < 1e-5  # fp32 ONNX scores: within ~1e-7 of torch's
    assert alone["max_abs_score_difference"] > 1e-5  # int8's own scores
    assert "| Predictor onnx-int8, fp32 below 0.999 | " in capsys.readouterr().out
