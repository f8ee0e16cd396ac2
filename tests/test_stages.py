"""Two-stage recipes (adapt_config): adaptation then fine-tuning as one `train` command, carried on after a stop;
and the loop skeleton both stages step through."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest
import yaml
from conftest import FAST


def adapt_recipe(tmp_path: Path, model_dir: Path, data_dir: Path, cache_dir: Path, **overrides) -> Path:
    recipe = {
        "model_name_or_path": str(model_dir),
        "data_dir": str(data_dir),
        "max_seq_len": 64,
        "dataset_cache_dir": str(cache_dir),
        "num_train_epochs": 2,
        "learning_rate": 5e-3,
        "per_device_train_batch_size": 8,
        "mixed_precision": "no",
        "output_dir": str(tmp_path / "adapted"),
        **overrides,
    }
    path = tmp_path / "adapt.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


def train_staged(recipe: Path, adapted: Path, data_dir: Path, cache_dir: Path, output_dir: Path, **overrides) -> dict:
    from hf_indosent.data.arguments import DataArguments
    from hf_indosent.training.arguments import FineTuneArguments, ModelArguments
    from hf_indosent.training.loop import train

    return train(
        ModelArguments(model_name_or_path=str(adapted), adapt_config=str(recipe)),
        DataArguments(data_dir=str(data_dir), max_seq_len=64, dataset_cache_dir=str(cache_dir)),
        FineTuneArguments(**{**FAST, "num_train_epochs": 1, "output_dir": str(output_dir), **overrides}),
    )


def test_one_command_adapts_then_fine_tunes_and_a_second_seed_reuses_the_adaptation(
    tiny_model_dir, tiny_smsa_dir, tmp_path, cache_dir
):
    recipe = adapt_recipe(tmp_path, tiny_model_dir, tiny_smsa_dir, cache_dir)
    adapted = tmp_path / "adapted"
    train_staged(recipe, adapted, tiny_smsa_dir, cache_dir, tmp_path / "run")
    record = json.loads((adapted / "adapt.json").read_text())
    assert record["source_model"] == str(tiny_model_dir) and len(record["epochs"]) == 3 and "stopped" not in record
    recorded = json.loads((tmp_path / "run" / "args.json").read_text())
    assert recorded["adapted_from"]["source_model"] == str(tiny_model_dir)
    assert (tmp_path / "run" / "best" / "model.safetensors").is_file()
    # every JSON file the two stages wrote went through the one write_json (indent 2, a final newline)
    written_json = [*adapted.glob("*.json"), *(tmp_path / "run").rglob("*.json")]
    assert any(path.name == "train_state.json" for path in written_json)
    for path in written_json:
        if path.name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
            continue  # transformers' own files
        text = path.read_text()
        assert text.endswith("\n") and text == json.dumps(json.loads(text), indent=2) + "\n", path

    written = (adapted / "model.safetensors").stat().st_mtime_ns
    train_staged(recipe, adapted, tiny_smsa_dir, cache_dir, tmp_path / "run-seed-1", seed=1)
    assert (adapted / "model.safetensors").stat().st_mtime_ns == written  # stage 1 done: not run again
    assert (tmp_path / "run-seed-1" / "metrics.json").is_file()


def test_a_stop_in_stage_1_is_carried_on_by_the_same_command(
    tiny_model_dir, tiny_smsa_dir, tmp_path, cache_dir, monkeypatch
):
    from hf_indosent.core.stopping import Interrupted
    from hf_indosent.modeling.loading import adaptation_of
    from hf_indosent.training import adaptation

    original, calls = adaptation.MaskedPositionsLoss.forward, []

    def forward(self, *args, **kwargs):
        if self.training:
            calls.append(1)
            if len(calls) == 5:  # Ctrl-C during the 5th of 12 steps of epoch 1
                os.kill(os.getpid(), signal.SIGINT)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(adaptation.MaskedPositionsLoss, "forward", forward)
    monkeypatch.setattr(sys, "argv", ["/venv/bin/hf-indosent", "train", "--config", "best.yaml"])
    recipe = adapt_recipe(tmp_path, tiny_model_dir, tiny_smsa_dir, cache_dir)
    adapted = tmp_path / "adapted"
    with pytest.raises(Interrupted) as stop:
        train_staged(recipe, adapted, tiny_smsa_dir, cache_dir, tmp_path / "run")
    assert str(stop.value).endswith("Carry on with the same command: hf-indosent train --config best.yaml")
    assert json.loads((adapted / "adapt.json").read_text())["stopped"]["step"] == 5
    assert not (tmp_path / "run").exists()  # fine-tuning had not started

    monkeypatch.setattr(adaptation.MaskedPositionsLoss, "forward", original)
    train_staged(recipe, adapted, tiny_smsa_dir, cache_dir, tmp_path / "run")
    done = adaptation_of(str(adapted))
    # the part-epoch (5 of 12 steps) is kept and both epochs run again, as `adapt` continues a stopped adaptation
    assert done["epochs"] == pytest.approx(2.42) and done["source_model"] == str(tiny_model_dir)
    assert "stopped" not in json.loads((adapted / "adapt.json").read_text())
    assert (tmp_path / "run" / "best" / "model.safetensors").is_file()


def test_an_adapted_folder_from_other_settings_is_refused_before_any_work(
    tiny_model_dir, tiny_smsa_dir, tmp_path, cache_dir
):
    from hf_indosent.core.arguments import RecipeError

    recipe = adapt_recipe(tmp_path, tiny_model_dir, tiny_smsa_dir, cache_dir, num_train_epochs=1)
    adapted = tmp_path / "adapted"
    train_staged(recipe, adapted, tiny_smsa_dir, cache_dir, tmp_path / "run")
    recipe = adapt_recipe(tmp_path, tiny_model_dir, tiny_smsa_dir, cache_dir, num_train_epochs=1, learning_rate=1e-3)
    with pytest.raises(RecipeError, match=r"other settings: learning_rate 0\.005 \(recipe: 0\.001\)\. Remove"):
        train_staged(recipe, adapted, tiny_smsa_dir, cache_dir, tmp_path / "run-2")
    assert not (tmp_path / "run-2").exists()


def test_the_adaptation_must_write_where_fine_tuning_reads(tiny_model_dir, tiny_smsa_dir, tmp_path, cache_dir):
    from hf_indosent.core.arguments import ArgumentError, RecipeError

    recipe = adapt_recipe(tmp_path, tiny_model_dir, tiny_smsa_dir, cache_dir)
    with pytest.raises(RecipeError, match=r"set model_name_or_path: .*adapted so fine-tuning starts"):
        train_staged(recipe, tmp_path / "elsewhere", tiny_smsa_dir, cache_dir, tmp_path / "run")
    with pytest.raises(ArgumentError, match=r"adapt_config 'no/such\.yaml' not found"):
        train_staged(Path("no/such.yaml"), tmp_path / "adapted", tiny_smsa_dir, cache_dir, tmp_path / "run")


def test_fine_tuning_and_adaptation_step_through_one_skeleton(
    tiny_model_dir, tiny_smsa_dir, tmp_path, cache_dir, monkeypatch
):
    """Clipping, the optimizer step and zeroing are written once (training/skeleton.py) and both loops use them."""
    from hf_indosent.training import skeleton

    original, steps = skeleton.optimizer_step, []

    def counted(accelerator, model, optimizer, max_grad_norm, scheduler=None):
        steps.append((max_grad_norm, scheduler is not None))
        return original(accelerator, model, optimizer, max_grad_norm, scheduler)

    monkeypatch.setattr(skeleton, "optimizer_step", counted)
    recipe = adapt_recipe(tmp_path, tiny_model_dir, tiny_smsa_dir, cache_dir, num_train_epochs=1, max_grad_norm=2.5)
    train_staged(recipe, tmp_path / "adapted", tiny_smsa_dir, cache_dir, tmp_path / "run", max_grad_norm=7.0)
    adapting = [step for step in steps if step[0] == 2.5]
    fine_tuning = [step for step in steps if step[0] == 7.0]
    assert len(adapting) == 12 and all(per_step for _, per_step in adapting)  # AdamW's schedule steps per step
    assert len(fine_tuning) >= 1 and not any(per_step for _, per_step in fine_tuning)  # StepLR: per epoch, outside
    assert len(steps) == len(adapting) + len(fine_tuning)
