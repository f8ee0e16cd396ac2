"""Faults at any moment: SIGKILL during training, damaged checkpoints, NaN losses. Training must recover exactly."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from accelerate.state import AcceleratorState
from conftest import cli_args, comparable, run_cli, run_train
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertForSequenceClassification

from hf_indosent.core.files import recover_dir, replace_dir
from hf_indosent.training.checkpoints import (
    STATE_FILE,
    TrainState,
    checkpoint_problem,
    list_checkpoints,
    resolve_checkpoint,
)
from hf_indosent.training.step import NonFiniteLossError

# Each run of the chain is killed at a new moment, then the next run resumes from `latest` (each process counts its
# own calls). Steps: 12 per epoch, a checkpoint every 5 steps and at every epoch end.
KILL_CHAIN = [
    ("hf_indosent.training.checkpoints:write_json", 2, "before"),  # the 2nd checkpoint is being written (step 10)
    ("hf_indosent.core.files:replace_dir", 1, "before"),  # best/ being replaced at the end of epoch 1
    ("hf_indosent.training.loop:evaluate", 2, "before"),  # during validation of epoch 2
    ("hf_indosent.training.loop:plot_training_curves", 1, "before"),  # log.jsonl written, checkpoint of epoch 2 not yet
    ("hf_indosent.training.loop:save_checkpoint", 3, "after"),  # just after a mid-epoch checkpoint in epoch 3
    ("hf_indosent.training.loop:finish", 1, "before"),  # all epochs done, metrics.json not yet written
]


def assert_best_is_whole(run_dir: Path) -> None:
    best = run_dir / "best"
    if best.exists():
        AutoModelForSequenceClassification.from_pretrained(best)
        AutoTokenizer.from_pretrained(best)


@pytest.mark.slow
def test_sigkill_at_any_moment_then_resume_matches_uninterrupted(tiny_model_dir, tiny_smsa_dir, tmp_path, cache_dir):
    common = {"num_train_epochs": 3, "checkpointing_steps": 5, "save_total_limit": 2}
    reference, crashed = tmp_path / "reference", tmp_path / "crashed"
    done = run_cli("scripts/train.py", *cli_args(tiny_model_dir, tiny_smsa_dir, reference, cache_dir, **common))
    assert done.returncode == 0, done.stderr[-2000:]

    for number, (target, nth, when) in enumerate(KILL_CHAIN):
        resume = {"resume_from_checkpoint": "latest"} if number else {}
        args = cli_args(tiny_model_dir, tiny_smsa_dir, crashed, cache_dir, **common, **resume)
        killed = run_cli("tests/crash_runner.py", target, str(nth), when, "--", *args)
        assert killed.returncode == -9, (target, killed.stderr[-2000:])
        assert_best_is_whole(crashed)
        assert not (crashed / "metrics.json").exists()

    final = run_cli(
        "scripts/train.py",
        *cli_args(tiny_model_dir, tiny_smsa_dir, crashed, cache_dir, **common, resume_from_checkpoint="latest"),
    )
    assert final.returncode == 0, final.stderr[-2000:]
    assert comparable(crashed) == comparable(reference)
    assert_best_is_whole(crashed)
    leftovers = [p.name for p in [*crashed.iterdir(), *(crashed / "checkpoints").iterdir()] if p.name.startswith(".")]
    assert leftovers == []


def fake_checkpoint(root: Path, name: str, files: dict[str, bytes], record: dict | None) -> Path:
    folder = root / "checkpoints" / name
    folder.mkdir(parents=True)
    for file, content in files.items():
        (folder / file).write_bytes(content)
    if record is not None:
        (folder / STATE_FILE).write_text(json.dumps(record))
    return folder


def test_incomplete_or_damaged_checkpoints_are_skipped(tmp_path, caplog):
    state = TrainState().to_dict()
    good = fake_checkpoint(
        tmp_path,
        "checkpoint-e0001-s000000010",
        {"model.safetensors": b"12345"},
        {"state": state, "files": {"model.safetensors": 5}},
    )
    fake_checkpoint(tmp_path, "checkpoint-e0001-s000000015", {"model.safetensors": b"12345"}, None)  # no marker
    fake_checkpoint(
        tmp_path,
        "checkpoint-e0001-s000000020",
        {"model.safetensors": b"12"},
        {"state": state, "files": {"model.safetensors": 5}},
    )  # truncated
    fake_checkpoint(
        tmp_path, "checkpoint-e0002-s000000024", {}, {"state": state, "files": {"optimizer.bin": 9}}
    )  # a file is gone
    bad = fake_checkpoint(tmp_path, "checkpoint-e0002-s000000030", {}, None)
    (bad / STATE_FILE).write_text("{not json")

    with caplog.at_level("WARNING"):
        assert list_checkpoints(tmp_path) == [good]
        assert resolve_checkpoint(tmp_path, "latest") == good
    warnings = caplog.text
    assert "s000000015: no train_state.json" in warnings
    assert "model.safetensors has 2 bytes, 5 were written" in warnings
    assert "optimizer.bin is missing" in warnings
    assert "unreadable train_state.json" in warnings
    with pytest.raises(FileNotFoundError, match="not a usable checkpoint"):
        resolve_checkpoint(tmp_path, str(bad))
    assert checkpoint_problem(good) is None


def test_best_swap_interrupted_between_renames_is_recovered(tmp_path):
    """The only state a kill inside replace_dir can leave besides 'old' or 'new': the old folder set aside."""
    target = tmp_path / "best"
    old_best, new_best = tmp_path / "staging-old", tmp_path / "staging-new"
    for folder, marker in ((old_best, "old"), (new_best, "new")):
        folder.mkdir()
        (folder / "config.json").write_text(marker)
    replace_dir(old_best, target)
    (tmp_path / ".best.old").mkdir()
    shutil.copytree(target, tmp_path / ".best.old", dirs_exist_ok=True)
    shutil.rmtree(target)  # killed after moving best/ aside, before moving the new one in
    recover_dir(target)
    assert (target / "config.json").read_text() == "old"
    replace_dir(new_best, target)
    assert (target / "config.json").read_text() == "new" and not (tmp_path / ".best.old").exists()


def test_nan_loss_stops_with_the_step_and_keeps_best_and_checkpoint(
    tiny_model_dir, tiny_smsa_dir, tmp_path, cache_dir, monkeypatch
):
    """A NaN loss in the 2nd micro-batch of optimizer step 16 (epoch 2): clear error naming the step, best/ of epoch 1
    intact, epoch-1 checkpoint resumable."""
    original = BertForSequenceClassification.forward
    calls = {"n": 0}

    def forward_with_nan(self, *args, **kwargs):
        output = original(self, *args, **kwargs)
        if self.training:
            calls["n"] += 1
            if calls["n"] == 15 * 4 + 2:  # 4 micro-batches per step
                output.logits = output.logits * math.nan  # the loop computes the loss from the logits
        return output

    monkeypatch.setattr(BertForSequenceClassification, "forward", forward_with_nan)
    run_dir = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match=r"optimizer step 16 \(epoch 2\)"):
        run_train(tiny_model_dir, tiny_smsa_dir, run_dir, cache_dir, num_train_epochs=3, micro_batches=4)
    best_weights = (run_dir / "best" / "model.safetensors").read_bytes()
    assert [p.name for p in list_checkpoints(run_dir)] == ["checkpoint-e0001-s000000012"]
    assert not (run_dir / "metrics.json").exists()

    monkeypatch.setattr(BertForSequenceClassification, "forward", original)
    AcceleratorState._reset_state(reset_partial_state=True)
    results = run_train(  # calibration off: it would rescale best/'s classifier, by design
        tiny_model_dir,
        tiny_smsa_dir,
        run_dir,
        cache_dir,
        num_train_epochs=1,
        resume_from_checkpoint="latest",
        calibrate=False,
    )
    assert results["epochs_completed"] == 1
    assert (run_dir / "best" / "model.safetensors").read_bytes() == best_weights
