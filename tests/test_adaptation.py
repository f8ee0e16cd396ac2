"""hf-indosent adapt: masked-LM training on the task's texts, written as a folder that training starts from."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest
from conftest import run_train


def adapt_into(model_dir: Path, data_dir: Path, output_dir: Path, cache_dir: Path, **overrides) -> dict:
    from hf_indosent.data.arguments import DataArguments
    from hf_indosent.training.adaptation import adapt
    from hf_indosent.training.arguments import AdaptArguments

    settings = {"num_train_epochs": 2, "learning_rate": 5e-3, "per_device_train_batch_size": 8, "mixed_precision": "no"}
    return adapt(
        DataArguments(data_dir=str(data_dir), max_seq_len=64, dataset_cache_dir=str(cache_dir)),
        AdaptArguments(model_name_or_path=str(model_dir), output_dir=str(output_dir), **{**settings, **overrides}),
    )


def test_masked_positions_loss_equals_the_full_masked_lm_loss(tiny_model_dir):
    import torch
    from transformers import AutoModelForMaskedLM

    from hf_indosent.training.adaptation import MaskedPositionsLoss

    model = AutoModelForMaskedLM.from_pretrained(tiny_model_dir).eval()
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, model.config.vocab_size, (3, 10), generator=generator)
    labels = torch.full_like(input_ids, -100)
    labels[0, 2], labels[1, 5], labels[2, 0], labels[2, 9] = 17, 40, 3, 99
    attention_mask = torch.ones_like(input_ids)
    with torch.no_grad():
        full = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        masked_only = MaskedPositionsLoss(model)(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    assert masked_only.item() == pytest.approx(full.item(), rel=1e-5)


def test_adapted_folder_lowers_held_out_loss_and_trains(tiny_model_dir, tiny_smsa_dir, tmp_path, cache_dir):
    from safetensors.torch import load_file
    from transformers import AutoModel

    adapted = tmp_path / "adapted"
    record = adapt_into(tiny_model_dir, tiny_smsa_dir, adapted, cache_dir)
    assert {"config.json", "model.safetensors", "tokenizer.json", "adapt.json"} <= {p.name for p in adapted.iterdir()}
    assert json.loads((adapted / "adapt.json").read_text()) == record
    losses = [epoch["validation_mlm_loss"] for epoch in record["epochs"]]
    assert [epoch["epoch"] for epoch in record["epochs"]] == [0, 1, 2]
    assert losses[-1] < losses[0]  # the model learned the task's texts (held out: validation, fixed masks)
    assert record["data"]["texts"] == 96 and record["mixed_precision"] == "no"
    # the source model's pooler is kept (masked-LM classes drop it), the encoder is the adapted one
    weights = load_file(adapted / "model.safetensors")
    source = AutoModel.from_pretrained(tiny_model_dir)
    assert weights["bert.pooler.dense.weight"].equal(source.pooler.dense.weight)
    assert not weights["bert.encoder.layer.0.attention.self.query.weight"].equal(
        source.encoder.layer[0].attention.self.query.weight
    )
    # and training starts from it like from any model folder, with no missing encoder or pooler weight
    run_dir = tmp_path / "run"
    run_train(adapted, tiny_smsa_dir, run_dir, cache_dir, num_train_epochs=1)
    assert (run_dir / "best" / "model.safetensors").is_file()
    # the run records what it was adapted from, and the model card names that source, not a local folder
    recipe = json.loads((run_dir / "args.json").read_text())
    assert recipe["adapted_from"] == {
        "source_model": str(tiny_model_dir),
        "epochs": 2,
        "validation_mlm_loss": [losses[0], losses[-1]],
    }
    from hf_indosent.sharing.model_card import build_model_card

    card = build_model_card("me/tapt-model", ["positive", "neutral", "negative"], recipe=recipe)
    assert "adapted to the training texts by masked-LM training first (`hf-indosent adapt`, 2 epochs" in card
    recipe["adapted_from"]["source_model"] = "indobenchmark/indobert-base-p1"
    card = build_model_card("me/tapt-model", ["positive", "neutral", "negative"], recipe=recipe)
    assert "base_model: indobenchmark/indobert-base-p1" in card


def test_adapting_an_adapted_folder_further_keeps_the_source_and_adds_the_epochs(
    tiny_model_dir, tiny_smsa_dir, tmp_path, cache_dir
):
    from hf_indosent.modeling.loading import adaptation_of

    first = adapt_into(tiny_model_dir, tiny_smsa_dir, tmp_path / "first", cache_dir, num_train_epochs=1)
    second = adapt_into(tmp_path / "first", tiny_smsa_dir, tmp_path / "second", cache_dir, num_train_epochs=2)
    third = adapt_into(tmp_path / "second", tiny_smsa_dir, tmp_path / "third", cache_dir, num_train_epochs=1)
    assert third["source_model"] == second["source_model"] == str(tiny_model_dir)  # not the intermediate folders
    assert third["continued_from"] == str(tmp_path / "second")
    assert [stage["epochs"] for stage in third["earlier"]] == [first["epochs"], second["epochs"]]
    assert adaptation_of(str(tmp_path / "third")) == {
        "source_model": str(tiny_model_dir),
        "epochs": 4,
        "validation_mlm_loss": [first["epochs"][0]["validation_mlm_loss"], third["epochs"][-1]["validation_mlm_loss"]],
    }
    assert adaptation_of(str(tmp_path / "first"))["epochs"] == 1 and "earlier" not in first
    assert adaptation_of(str(tiny_model_dir)) is None


def test_ctrl_c_during_adapt_saves_the_model_so_far_and_the_command_to_continue(
    tiny_model_dir, tiny_smsa_dir, tmp_path, cache_dir, monkeypatch
):
    from hf_indosent.cli import Interrupted
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
    stopped_dir = tmp_path / "adapted"
    monkeypatch.setattr(sys, "argv", ["/venv/bin/hf-indosent", "adapt", "--config", "c.yaml", "--seed", "3"])
    with pytest.raises(Interrupted) as stop:
        adapt_into(tiny_model_dir, tiny_smsa_dir, stopped_dir, cache_dir, num_train_epochs=2)
    assert stop.value.signum == signal.SIGINT and len(calls) == 5  # stopped after the step it was in
    message = str(stop.value)
    assert message.startswith("stopped at epoch 1, step 5 of 12: the model adapted so far is saved in ")
    assert message.endswith(
        f"Continue with: hf-indosent adapt --config c.yaml --seed 3 --model_name_or_path {stopped_dir} "
        f"--output_dir {stopped_dir}-continued --num_train_epochs 2"
    )
    record = json.loads((stopped_dir / "adapt.json").read_text())
    assert record["stopped"] == {"signal": "SIGINT", "epoch": 1, "step": 5, "steps_in_epoch": 12}
    assert [epoch["epoch"] for epoch in record["epochs"]] == [0, 1]  # the part-epoch's losses are measured too
    assert adaptation_of(str(stopped_dir))["epochs"] == 0.42  # 5 of 12 steps
    assert (stopped_dir / "model.safetensors").is_file()

    monkeypatch.setattr(adaptation.MaskedPositionsLoss, "forward", original)
    continued = tmp_path / "adapted-continued"
    adapt_into(stopped_dir, tiny_smsa_dir, continued, cache_dir, num_train_epochs=2)
    assert adaptation_of(str(continued))["epochs"] == pytest.approx(2.42)
    assert adaptation_of(str(continued))["source_model"] == str(tiny_model_dir)


def test_adapt_refuses_to_write_over_other_files(tiny_model_dir, tiny_smsa_dir, tmp_path, cache_dir):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="holds no adapted model"):
        adapt_into(tiny_model_dir, tiny_smsa_dir, foreign, cache_dir, overwrite_output_dir=True)
    assert (foreign / "notes.txt").read_text() == "keep me"

    adapted = tmp_path / "adapted"
    adapt_into(tiny_model_dir, tiny_smsa_dir, adapted, cache_dir, num_train_epochs=1)
    with pytest.raises(FileExistsError, match="--overwrite_output_dir"):
        adapt_into(tiny_model_dir, tiny_smsa_dir, adapted, cache_dir, num_train_epochs=1)
    record = adapt_into(
        tiny_model_dir, tiny_smsa_dir, adapted, cache_dir, num_train_epochs=2, overwrite_output_dir=True
    )
    assert json.loads((adapted / "adapt.json").read_text())["epochs"] == record["epochs"]
    assert not any(path.name.startswith(".") for path in tmp_path.iterdir())  # no staging folder left behind


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model_name_or_path", "x", "--mlm_probability", "1.5"], "mlm_probability=1.5 must be in (0, 1)"),
        (["--model_name_or_path", "x", "--warmup_ratio", "1"], "warmup_ratio=1.0 must be in [0, 1)"),
        (["--model_name_or_path", "x", "--num_train_epochs", "0"], "num_train_epochs=0 must be a positive integer"),
        ([], "model_name_or_path is required: pass --model_name_or_path MODEL or set it in the recipe"),
    ],
)
def test_adapt_usage_errors_are_one_line(argv, message, capsys):
    from hf_indosent.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["adapt", "--output_dir", "out", *argv])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2
    assert message in err and len(err.splitlines()) == 1
