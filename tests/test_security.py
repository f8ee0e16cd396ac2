"""Security and hygiene: safetensors only, no pickle code execution, no implicit remote code, no token leaks."""

from __future__ import annotations

import json
import logging
import os
import pickle
from pathlib import Path

import pytest
import torch
import yaml
from accelerate.state import AcceleratorState
from conftest import FAKE_TOKEN, run_train
from safetensors.torch import save_file
from test_hub import card_parts, model_index_metrics

from hf_indosent.data.parsing import LABEL_NAMES
from hf_indosent.inference.predictor import Predictor
from hf_indosent.modeling.loading import load_model, load_tokenizer
from hf_indosent.training.checkpoints import STATE_FILE, list_checkpoints

ACCELERATE_STATE_PICKLES = {"optimizer.bin", "scheduler.bin", "random_states_0.pkl"}


def test_weights_are_only_ever_written_as_safetensors(tiny_model_dir, tiny_smsa_dir, tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    run_train(tiny_model_dir, tiny_smsa_dir, run_dir, cache_dir, num_train_epochs=1)
    best = {path.name for path in (run_dir / "best").iterdir()}
    assert "model.safetensors" in best
    assert not {name for name in best if name.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))}
    (checkpoint,) = list_checkpoints(run_dir)
    files = {path.name for path in checkpoint.iterdir()}
    assert files == {"model.safetensors", STATE_FILE, *ACCELERATE_STATE_PICKLES}


class _Payload:
    """Unpickling this runs a shell command: what a tampered checkpoint could carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_tampered_checkpoint_cannot_run_code(tiny_model_dir, tiny_smsa_dir, tmp_path, cache_dir):
    """Checkpoint pickles are loaded with weights_only=True: a payload is refused, never executed."""
    run_dir = tmp_path / "run"
    run_train(tiny_model_dir, tiny_smsa_dir, run_dir, cache_dir, num_train_epochs=1)
    (checkpoint,) = list_checkpoints(run_dir)
    marker = tmp_path / "pwned"
    torch.save(_Payload(marker), checkpoint / "optimizer.bin")
    record = json.loads((checkpoint / STATE_FILE).read_text())
    record["files"]["optimizer.bin"] = (checkpoint / "optimizer.bin").stat().st_size  # a careful attacker
    (checkpoint / STATE_FILE).write_text(json.dumps(record))
    AcceleratorState._reset_state(reset_partial_state=True)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        run_train(
            tiny_model_dir, tiny_smsa_dir, run_dir, cache_dir, num_train_epochs=2, resume_from_checkpoint="latest"
        )
    assert not marker.exists()


@pytest.fixture
def remote_code_model(tmp_path) -> tuple[Path, Path]:
    """A model folder whose config asks for custom code; importing that code would create a marker file."""
    folder, marker = tmp_path / "remote-code-model", tmp_path / "executed"
    folder.mkdir()
    config = {
        "model_type": "evil-bert",
        "architectures": ["EvilModel"],
        "auto_map": {
            "AutoConfig": "evil.EvilConfig",
            "AutoModelForSequenceClassification": "evil.EvilModel",
            "AutoTokenizer": ["evil.EvilTokenizer", None],
        },
        "id2label": {"0": "positive", "1": "neutral", "2": "negative"},
        "label2id": {"positive": 0, "neutral": 1, "negative": 2},
    }
    (folder / "config.json").write_text(json.dumps(config))
    tokenizer_config = {"tokenizer_class": "EvilTokenizer", "auto_map": config["auto_map"]}
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    # complete on disk (weights, vocabulary), so loading goes as far as the remote-code question
    save_file({"weight": torch.zeros(1)}, str(folder / "model.safetensors"))
    (folder / "vocab.txt").write_text("[PAD]\n[UNK]\n", encoding="utf-8")
    return folder, marker


def test_remote_code_is_never_trusted_implicitly(remote_code_model):
    folder, marker = remote_code_model
    for load in (
        lambda: load_model(str(folder), LABEL_NAMES),
        lambda: load_tokenizer(str(folder)),
        lambda: Predictor(folder),
    ):
        with pytest.raises((ValueError, OSError), match="trust_remote_code"):  # one line, never run
            load()
    assert not marker.exists()


def test_training_with_push_never_leaks_the_token(
    tiny_model_dir,
    tiny_smsa_dir,
    tmp_path,
    cache_dir,
    hub_calls,
    monkeypatch,
    capfd,
    caplog,
):
    """HF_TOKEN set, --push_to_hub on: the card carries the run's metrics; the token is in no file, log or upload."""
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    run_dir = tmp_path / "run"
    with caplog.at_level(logging.DEBUG):
        results = run_train(
            tiny_model_dir,
            tiny_smsa_dir,
            run_dir,
            cache_dir,
            num_train_epochs=1,
            push_to_hub=True,
            hub_model_id="someone/tiny-smsa",
        )
    captured = capfd.readouterr()
    assert "Pushed best model to https://huggingface.co/someone/tiny-smsa" in captured.out
    uploaded = hub_calls["create_commit"]["files"]
    assert {"model.safetensors", "config.json", "README.md"} <= set(uploaded)
    meta, _ = card_parts(uploaded["README.md"].decode())
    assert model_index_metrics(meta)["validation"]["f1"] == pytest.approx(results["validation"]["f1"])
    assert yaml.safe_load(yaml.safe_dump(meta)) == meta

    assert FAKE_TOKEN not in captured.out + captured.err + caplog.text
    assert all(FAKE_TOKEN.encode() not in content for content in uploaded.values())
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert FAKE_TOKEN.encode() not in path.read_bytes(), path
