"""Experiment trackers (issue 30): chosen and refused while parsing, read back from MLflow (a SQLite store), trackio
(its local store) and TensorBoard (event files), continued by a resumed run, and a tracker failing mid-run is only
a warning. Other trackers (wandb, comet_ml, aim, clearml, dvclive, swanlab) are Accelerate's own integrations, not
run here."""

from __future__ import annotations

import errno
import importlib.util
import json
import logging
import os
import shutil
import tempfile

import pytest
from conftest import log_lines, run_train

from hf_indosent import cli
from hf_indosent.core.arguments import ArgumentError
from hf_indosent.training import tracker_choice
from hf_indosent.training.tracker_choice import resolve_report_to

# trackio reads TRACKIO_DIR when it is first imported: set before any test imports it, removed after this module
MADE_TRACKIO_DIR = "TRACKIO_DIR" not in os.environ
TRACKIO_DIR = os.environ.setdefault("TRACKIO_DIR", tempfile.mkdtemp(prefix="hf-indosent-trackio-"))

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def needs(*packages: str):
    missing = [package for package in packages if importlib.util.find_spec(package) is None]
    return pytest.mark.skipif(bool(missing), reason=f'needs {", ".join(missing)}: pip install -e ".[dev]"')


@pytest.fixture(scope="module", autouse=True)
def _trackio_dir():
    yield
    if MADE_TRACKIO_DIR:
        shutil.rmtree(TRACKIO_DIR, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------------------
# Choosing trackers


def test_report_to_names_several_at_once(monkeypatch):
    monkeypatch.setattr(tracker_choice, "installed", lambda name: name in ("tensorboard", "mlflow"))
    assert resolve_report_to("none") == [] == resolve_report_to(["none"]) == resolve_report_to([])
    assert resolve_report_to(["mlflow,tensorboard"]) == ["mlflow", "tensorboard"]
    assert resolve_report_to(["MLflow", "tensorboard", "mlflow"]) == ["mlflow", "tensorboard"]
    assert resolve_report_to("all") == ["tensorboard", "mlflow"]
    with pytest.raises(ArgumentError, match=r"unknown tracker 'mlfow' \(did you mean 'mlflow'\?\)"):
        resolve_report_to(["mlfow"])
    with pytest.raises(ArgumentError, match="'none' cannot be combined"):
        resolve_report_to(["none", "mlflow"])
    with pytest.raises(ArgumentError, match=r'pip install "hf-indosent\[comet\]"'):
        resolve_report_to(["comet_ml"])


def test_a_tracker_not_installed_is_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(tracker_choice, "installed", lambda name: name != "wandb")
    with pytest.raises(SystemExit) as stopped:
        cli.main(["train", "--output_dir", str(tmp_path / "run"), "--report_to", "tensorboard", "wandb"])
    assert stopped.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert 'report_to=wandb: its package is not installed; install it with: pip install "hf-indosent[wandb]"' in line
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------------------------------------------
# What is logged, read back


def tensorboard_scalars(folder) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict = {}
    for events in sorted(folder.rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend((event.step, event.value) for event in accumulator.Scalars(tag))
    return scalars


@needs("mlflow", "trackio", "tensorboard")
def test_mlflow_trackio_and_tensorboard_read_back_and_resume(
    tiny_model_dir, tiny_smsa_dir, tmp_path, cache_dir, monkeypatch, request
):
    """One run into three trackers at once, stopped after epoch 1 and resumed for epoch 2: each holds the recipe,
    the step and epoch scalars of log.jsonl and the final metrics, and the resumed run continues the same MLflow
    run, the same trackio run and the same TensorBoard folder."""
    import mlflow
    from trackio.sqlite_storage import SQLiteStorage

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    request.addfinalizer(mlflow.end_run)  # a run left open by a failure ends here, not at exit in ./mlflow.db
    project = f"hf-indosent-test-{os.getpid()}"
    run_dir = tmp_path / "my-run"
    trackers = {"report_to": ["tensorboard", "mlflow", "trackio"], "tracker_project": project}
    run_train(tiny_model_dir, tiny_smsa_dir, run_dir, cache_dir, num_train_epochs=1, **trackers)
    recorded = json.loads((run_dir / "trackers.json").read_text())
    run_id = recorded["mlflow"]["run_id"]
    run_train(
        tiny_model_dir,
        tiny_smsa_dir,
        run_dir,
        cache_dir,
        num_train_epochs=2,
        resume_from_checkpoint="latest",
        **trackers,
    )
    history = log_lines(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [entry["epoch"] for entry in history] == [1, 2]
    assert json.loads((run_dir / "trackers.json").read_text())["mlflow"]["run_id"] == run_id

    # MLflow: one run, named after the run folder, in the project's experiment
    client = mlflow.MlflowClient()
    (experiment,) = [e for e in client.search_experiments() if e.name == project]
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.run_id == run_id and found.info.run_name == "my-run"
    assert float(found.data.params["learning_rate"]) == 5e-3  # the recipe (conftest's FAST) as hyperparameters
    assert found.data.params["seed"] == "42" and "launch/mixed_precision" in found.data.params
    f1 = client.get_metric_history(run_id, "validation/f1")
    assert [(m.step, m.value) for m in f1] == [
        (entry["global_step"], pytest.approx(entry["validation"]["f1"])) for entry in history
    ]
    per_class = client.get_metric_history(run_id, "validation_per_class/neutral/recall")
    assert len(per_class) == 2 and client.get_metric_history(run_id, "train_epoch/loss")
    assert {m.step for m in client.get_metric_history(run_id, "train/loss")} >= {2, 4}  # every logging_steps
    finals = client.get_metric_history(run_id, "final/validation/f1")  # each finish: after epoch 1, then 2
    assert [m.step for m in finals] == [12, 24] and finals[-1].value == pytest.approx(metrics["validation"]["f1"])
    assert client.get_metric_history(run_id, "final/calibration/ece_after")

    # trackio: the same run, resumed by name
    assert SQLiteStorage.get_runs(project) == ["my-run"]
    logs = SQLiteStorage.get_logs(project, "my-run")
    epochs = [row for row in logs if "validation/f1" in row]
    assert [(row["step"], row["validation/f1"]) for row in epochs] == [
        (entry["global_step"], pytest.approx(entry["validation"]["f1"])) for entry in history
    ]
    assert any("final/validation/f1" in row for row in logs)
    assert SQLiteStorage.get_run_config(project, "my-run")["per_device_train_batch_size"] == 8

    # TensorBoard: event files under runs/<run folder's name>/, both runs' in the one folder
    scalars = tensorboard_scalars(run_dir / "runs" / "my-run")
    assert [value for _, value in scalars["validation/f1"]] == pytest.approx([e["validation"]["f1"] for e in history])
    assert {"train/loss", "train/lr", "epoch", "train_epoch/f1", "final/validation/f1"} <= set(scalars)


@needs("tensorboard")
def test_a_tracker_failing_mid_run_is_a_warning(
    tiny_model_dir, tiny_smsa_dir, tmp_path, cache_dir, monkeypatch, caplog
):
    """The disk of a tracker fills up mid-run: one warning, the tracker is off, the run finishes with every file."""
    from accelerate.tracking import TensorBoardTracker

    calls = []
    original = TensorBoardTracker.log

    def full_disk(self, values, step=None, **kwargs):
        calls.append(step)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, values, step=step, **kwargs)

    monkeypatch.setattr(TensorBoardTracker, "log", full_disk)
    finished = []
    original_finish = TensorBoardTracker.finish
    monkeypatch.setattr(TensorBoardTracker, "finish", lambda self: finished.append(1) or original_finish(self))
    run_dir = tmp_path / "run"
    with caplog.at_level(logging.WARNING):
        results = run_train(
            tiny_model_dir, tiny_smsa_dir, run_dir, cache_dir, num_train_epochs=2, report_to="tensorboard"
        )
    warnings = [r.getMessage() for r in caplog.records if "tracker tensorboard failed" in r.getMessage()]
    assert len(warnings) == 1 and "No space left on device" in warnings[0] and "training goes on" in warnings[0]
    assert len(calls) == 2  # switched off after its failure: later steps do not wait on it
    assert finished == [1]  # but its run is still closed at the end (an MLflow run would stay open otherwise)
    assert results["epochs_completed"] == 2 and len(log_lines(run_dir)) == 2
    assert (run_dir / "metrics.json").is_file() and (run_dir / "best" / "model.safetensors").is_file()


@needs("tensorboard")
def test_adaptation_reports_beside_its_output_folder(tiny_model_dir, tiny_smsa_dir, tmp_path, cache_dir):
    from hf_indosent.data.arguments import DataArguments
    from hf_indosent.training.adaptation import adapt
    from hf_indosent.training.arguments import AdaptArguments

    output = tmp_path / "adapted"
    adapt(
        DataArguments(data_dir=str(tiny_smsa_dir), max_seq_len=32, dataset_cache_dir=str(cache_dir)),
        AdaptArguments(
            model_name_or_path=str(tiny_model_dir),
            output_dir=str(output),
            num_train_epochs=1,
            per_device_train_batch_size=8,
            mixed_precision="no",
            report_to=["tensorboard"],
        ),
    )
    assert (output / "adapt.json").is_file() and not (output / "runs").exists()
    scalars = tensorboard_scalars(tmp_path / "adapted-runs")
    assert {"train/mlm_loss", "validation_mlm_loss", "final/validation_mlm_loss"} <= set(scalars)
    assert [step for step, _ in scalars["validation_mlm_loss"]] == [0, 12]  # before adapting, after epoch 1


def test_a_recipe_s_single_tracker_still_loads(tmp_path):
    """Recipes written before several trackers were possible say `report_to: tensorboard`: still a valid recipe."""
    from hf_indosent.core.arguments import parse_args
    from hf_indosent.data.arguments import DataArguments
    from hf_indosent.training.arguments import FineTuneArguments, ModelArguments

    recipe = tmp_path / "old.yaml"
    recipe.write_text(f"output_dir: {tmp_path / 'run'}\nreport_to: tensorboard\n", encoding="utf-8")
    _, _, args = parse_args([ModelArguments, DataArguments, FineTuneArguments], ["--config", str(recipe)])
    assert args.report_to == ["tensorboard"]
