"""Two CPU processes (`accelerate launch --multi_gpu` + ACCELERATE_USE_CPU=1, gloo) against one process."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import cli_args, log_lines, make_rows, run_cli, write_tsv
from transformers import pipeline

from hf_indosent.metrics.scores import compute_metrics

pytestmark = pytest.mark.slow

LAUNCH_2_CPU = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
CPU = {"ACCELERATE_USE_CPU": "1"}


@pytest.fixture(scope="module")
def labelled_smsa_dir(tiny_smsa_dir, tmp_path_factory) -> Path:
    """The tiny SmSA folder with a labelled test file (21 rows: odd, so the last 2-process batch is padded)."""
    folder = tmp_path_factory.mktemp("tiny-smsa-labelled")
    for name in ("train_preprocess.tsv", "valid_preprocess.tsv"):
        shutil.copy(tiny_smsa_dir / name, folder / name)
    write_tsv(folder / "test_preprocess.tsv", make_rows(21, seed=3))
    return folder


def launch_two(port: int, *command: str):
    return run_cli(*command, launcher=[*LAUNCH_2_CPU, "--main_process_port", str(port)], env=CPU)


def test_two_processes_match_one(no_dropout_model, labelled_smsa_dir, tmp_path, cache_dir):
    """Same global batch (2 x 8 vs 1 x 16), no dropout: same trajectory, every example counted once, same best epoch;
    rank 1 writes nothing in the run folder; the test metrics equal a single-process scoring of the same weights."""
    common = {"num_train_epochs": 5, "early_stopping_patience": 10, "group_by_length": False}
    single, double, records = tmp_path / "single", tmp_path / "double", tmp_path / "records"
    records.mkdir()
    one = run_cli(
        "scripts/train.py",
        *cli_args(no_dropout_model, labelled_smsa_dir, single, cache_dir, **common, per_device_train_batch_size=16),
    )
    assert one.returncode == 0, one.stderr[-2000:]
    two = launch_two(
        29517,
        "tests/audit_runner.py",
        str(records),
        str(double),
        "--",
        *cli_args(no_dropout_model, labelled_smsa_dir, double, cache_dir, **common, per_device_train_batch_size=8),
    )
    assert two.returncode == 0, two.stderr[-2000:]

    one_metrics = json.loads((single / "metrics.json").read_text())
    two_metrics = json.loads((double / "metrics.json").read_text())
    assert two_metrics["validation"]["num_examples"] == 45  # odd: padded duplicates were dropped
    assert two_metrics["test"]["num_examples"] == 21
    assert [entry["validation"]["num_examples"] for entry in log_lines(double)] == [45] * 5
    assert one_metrics["best_epoch"] == two_metrics["best_epoch"] > 1
    assert two_metrics["validation"]["f1"] == pytest.approx(one_metrics["validation"]["f1"], abs=1e-6)

    rank0 = json.loads((records / "rank0.json").read_text())
    rank1 = json.loads((records / "rank1.json").read_text())
    assert any(path.endswith("metrics.json") for _, path in rank0)
    # Rank 1 only takes part in accelerate's save_state (which makes the staging folder on every rank and saves that
    # rank's RNG state there); it writes nothing else.
    assert rank1, "the audit saw no save_state on rank 1"
    for event, path in rank1:
        assert event == "os.mkdir" and Path(path).parent.name == "checkpoints", (event, path)
        assert Path(path).name.startswith(".tmp-checkpoint-"), path

    texts = (labelled_smsa_dir / "test_preprocess.tsv").read_text().splitlines()
    gold = [["positive", "neutral", "negative"].index(line.split("\t")[1]) for line in texts]
    classifier = pipeline("text-classification", model=str(double / "best"), device="cpu")
    predicted = [
        classifier.model.config.label2id[out["label"]] for out in classifier([t.split("\t")[0] for t in texts])
    ]
    single_process = compute_metrics(predicted, gold)
    for name in ("accuracy", "f1", "precision", "recall"):
        assert two_metrics["test"][name] == pytest.approx(single_process[name], abs=1e-12)


def test_early_stopping_stops_both_processes_at_the_same_epoch(tiny_model_dir, tiny_smsa_dir, tmp_path, cache_dir):
    """No learning (lr 1e-12): epoch 1 stays best, both ranks stop after epoch 2 (a rank that went on would hang)."""
    run_dir = tmp_path / "run"
    args = cli_args(
        tiny_model_dir,
        tiny_smsa_dir,
        run_dir,
        cache_dir,
        learning_rate=1e-12,
        num_train_epochs=6,
        early_stopping_patience=1,
    )
    result = launch_two(29518, "scripts/train.py", *args)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["stopped_early"] is True and metrics["epochs_completed"] == 2
    assert len(log_lines(run_dir)) == 2
