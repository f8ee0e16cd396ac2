"""The tutorial baseline (benchmarks/tutorial_baseline.py) runs end to end and reports consistent figures."""

from __future__ import annotations

import importlib
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from hf_indosent.modeling.loading import load_tokenizer

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

# The tutorial's metrics warn when an untrained model never predicts some class; that is expected here.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")


@pytest.fixture(scope="module")
def baseline() -> ModuleType:
    """benchmarks/ is no package (its scripts import each other as siblings), so the folder goes on sys.path."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module("tutorial_baseline")


def test_reads_every_row_verbatim(baseline, tmp_path):
    path = tmp_path / "rows.tsv"
    path.write_text('"kata pembuka tanpa penutup\tpositive\nNA\tneutral\nbiasa saja\tnegative\n', encoding="utf-8")
    data = baseline.DocumentSentimentDataset(path, tokenizer=None).data
    assert data["text"].tolist() == ['"kata pembuka tanpa penutup', "NA", "biasa saja"]
    assert data["sentiment"].tolist() == [0, 1, 2]


def test_one_epoch_figures(baseline, tiny_model_dir, tiny_smsa_dir):
    n_train, batch_size, max_seq_len = 50, 16, 8
    result = baseline.run_baseline(
        str(tiny_model_dir),
        tiny_smsa_dir / "train_preprocess.tsv",
        tiny_smsa_dir / "valid_preprocess.tsv",
        max_train_samples=n_train,
        batch_size=batch_size,
        epochs=1,
        lr=1e-3,
        max_seq_len=max_seq_len,
        seed=0,
        progress=False,
    )
    assert torch.is_grad_enabled(), "the caller's grad mode must be restored"
    assert (result["n_train"], result["n_eval"]) == (n_train, 45)
    assert result["optimizer_steps"] == math.ceil(n_train / batch_size)

    tokenizer = load_tokenizer(str(tiny_model_dir))
    texts = [line.split("\t")[0] for line in (tiny_smsa_dir / "train_preprocess.tsv").read_text().splitlines()]
    lengths = [len(tokenizer.encode(text)) for text in texts[:n_train]]
    assert max(lengths) > max_seq_len, "fixture should exercise truncation"
    assert result["train_real_tokens"] == [sum(min(length, max_seq_len) for length in lengths)]
    assert result["train_positions"][0] <= n_train * max_seq_len
    assert 0 < result["padding_fraction"] == result["train_padding_fraction"][0] < 1
    assert result["tokens_per_s"] == pytest.approx(result["train_real_tokens"][0] / result["train_s"])
    assert result["samples_per_s"] == pytest.approx(n_train / result["train_s"])

    assert 0 < result["train_tokenize_s"][0] < result["train_data_s"][0] < result["train_epoch_s"][0]
    assert result["data_prep_s"] == pytest.approx(
        result["data_load_s"] + result["train_tokenize_s"][0] + result["eval_tokenize_s"][0]
    )
    assert 0 <= result["val_f1"][0] <= 1 and 0 <= result["val_accuracy"][0] <= 1
    assert (result["best_val_f1"], result["best_epoch"]) == (result["val_f1"][0], 1)
    assert result["train_flops"][0] > 0 and result["eval_s"][0] > 0
    assert result["train_peak_rss_mib"] >= result["rss_start_mib"] > 0


def test_standalone_command(baseline, tiny_model_dir, tiny_smsa_dir, tmp_path, capsys):
    out = tmp_path / "baseline.json"
    args = f"--model {tiny_model_dir} --data_dir {tiny_smsa_dir} --epochs 2 --batch_size 32 --max_eval_samples 20"
    baseline.main([*args.split(), "--no_progress", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "96 train / 20 valid rows, 6 optimizer steps (3 per epoch)" in printed
    assert "epoch 2:" in printed
    result = json.loads(out.read_text())
    assert len(result["val_f1"]) == len(result["train_epoch_s"]) == 2
