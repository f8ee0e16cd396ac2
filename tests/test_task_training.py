"""Fine-tuning on the IndoNLU family: EmoT through the single-label path, CASA/HoASA with one head per aspect."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from conftest import FAST, NEGATIVE, POSITIVE, log_lines, make_rows
from sklearn.metrics import accuracy_score, f1_score
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from hf_indosent.core.arguments import ArgumentError
from hf_indosent.data.arguments import DataArguments
from hf_indosent.data.tasks import CASA, EMOT
from hf_indosent.modeling.aspects import aspect_config, flatten, per_aspect
from hf_indosent.training.arguments import FineTuneArguments, ModelArguments
from hf_indosent.training.loop import train
from hf_indosent.training.step import MicroBatchCollator, forward_backward

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def train_task(model_dir: Path, task: str, data_dir: Path, run_dir: Path, cache_dir: Path, **overrides) -> dict:
    return train(
        ModelArguments(model_name_or_path=str(model_dir)),
        DataArguments(task=task, data_dir=str(data_dir), max_seq_len=64, dataset_cache_dir=str(cache_dir)),
        FineTuneArguments(**{**FAST, "output_dir": str(run_dir), **overrides}),
    )


def validation_rows(data_dir: Path) -> list[list[str]]:
    with open(data_dir / "valid_preprocess.csv", encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle))[1:]


def test_casa_trains_one_head_per_aspect_scored_on_every_text_aspect_pair(
    tiny_model_dir, tiny_casa_dir, tmp_path, cache_dir
):
    run_dir = tmp_path / "casa"
    results = train_task(tiny_model_dir, "casa", tiny_casa_dir, run_dir, cache_dir, num_train_epochs=2)

    config = AutoConfig.from_pretrained(run_dir / "best")
    assert config.aspects == list(CASA.aspects) and config.aspect_labels == list(CASA.label_names)
    assert config.num_labels == 6 * 3 and config.id2label[4] == "machine:neutral"
    assert config.indonlu_task == "casa"

    # the headline f1 is IndoNLU's: macro F1 over every (text, aspect) pair of the best model's predictions
    rows = validation_rows(tiny_casa_dir)
    model = AutoModelForSequenceClassification.from_pretrained(run_dir / "best").eval()
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "best")
    with torch.no_grad():
        logits = model(**tokenizer([row[0] for row in rows], padding=True, return_tensors="pt")).logits
    predicted = per_aspect(logits, 6).argmax(-1).reshape(-1).tolist()
    gold = [CASA.label_names.index(label) for row in rows for label in row[1:]]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(results))
    assert metrics["validation"]["f1"] == pytest.approx(f1_score(gold, predicted, average="macro"), abs=1e-6)
    assert metrics["validation"]["num_examples"] == len(rows)
    assert metrics["aspects"] == list(CASA.aspects) and metrics["label_names"] == list(CASA.label_names)
    per_aspect_figures = metrics["validation_per_aspect"]
    assert list(per_aspect_figures) == list(CASA.aspects)
    for index, aspect in enumerate(CASA.aspects):
        expected = f1_score(gold[index::6], predicted[index::6], average="macro")
        assert per_aspect_figures[aspect]["f1"] == pytest.approx(expected, abs=1e-6)
        assert per_aspect_figures[aspect]["accuracy"] == pytest.approx(
            accuracy_score(gold[index::6], predicted[index::6])
        )
        assert sum(sum(row.values()) for row in per_aspect_figures[aspect]["confusion"]["matrix"].values()) == len(rows)
    assert sum(sum(row.values()) for row in metrics["validation_confusion"]["matrix"].values()) == 6 * len(rows)
    assert "test" not in metrics  # the masked test split is not scored
    assert set(log_lines(run_dir)[0]["validation_per_aspect_f1"]) == set(CASA.aspects)


def test_an_aspect_model_loads_in_a_fresh_process_with_the_same_logits(tiny_aspect_classifier_dir):
    text = "harga nya murah dan mesin nya bagus"
    model = AutoModelForSequenceClassification.from_pretrained(tiny_aspect_classifier_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_aspect_classifier_dir)
    with torch.no_grad():
        here = model(**tokenizer([text], return_tensors="pt")).logits[0].tolist()
    script = (
        "import json, sys, torch\n"
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer\n"
        "folder, text = sys.argv[1], sys.argv[2]\n"
        "model = AutoModelForSequenceClassification.from_pretrained(folder).eval()\n"
        "tokenizer = AutoTokenizer.from_pretrained(folder)\n"
        "with torch.no_grad():\n"
        "    logits = model(**tokenizer([text], return_tensors='pt')).logits[0].tolist()\n"
        "print(json.dumps({'logits': logits, 'aspects': model.config.aspects, 'class': type(model).__name__}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tiny_aspect_classifier_dir), text],
        capture_output=True,
        text=True,
        check=True,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    there = json.loads(done.stdout.strip().splitlines()[-1])
    assert there["class"] == "BertForSequenceClassification"  # stock transformers: no custom code to trust
    assert there["aspects"] == list(CASA.aspects)
    assert there["logits"] == pytest.approx(here, abs=1e-5)


def test_the_aspect_loss_is_the_sum_of_the_per_aspect_cross_entropies(tiny_model_dir):
    from hf_indosent.modeling.loading import load_model, load_tokenizer

    torch.manual_seed(0)
    model = load_model(str(tiny_model_dir), CASA.label_names, aspects=CASA.aspects).eval()  # no dropout: same pass
    tokenizer = load_tokenizer(str(tiny_model_dir))
    texts = ["mesin nya bagus", "harga mahal sekali", "bensin irit dan layanan ramah"]
    labels = torch.tensor([[0, 2, 1, 1, 1, 1], [1, 1, 1, 1, 0, 1], [2, 1, 1, 1, 1, 2]])
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**encoded).logits.reshape(3, 6, 3)
    by_hand = sum(F.cross_entropy(logits[:, aspect], labels[:, aspect]) for aspect in range(6))  # IndoNLU's loss

    features = [
        {**{key: encoded[key][row][encoded["attention_mask"][row].bool()].tolist() for key in encoded}, "labels": label}
        for row, label in enumerate(labels.tolist())
    ]
    batch = MicroBatchCollator(lambda parts: tokenizer.pad(parts, return_tensors="pt"), micro_batches=2)(features)
    loss, step_logits = forward_backward(Accelerator(cpu=True), model, batch, num_aspects=6)
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-5)
    torch.testing.assert_close(step_logits.reshape(3, 6, 3), logits, atol=1e-5, rtol=1e-5)
    rows, row_labels = flatten(step_logits, labels, 6)
    assert rows.shape == (18, 3) and row_labels.tolist() == labels.reshape(-1).tolist()


def test_aspect_config_reads_back_and_a_mismatched_one_is_refused(tiny_aspect_classifier_dir, tmp_path):
    from hf_indosent.modeling.folders import ModelSourceError
    from hf_indosent.modeling.loading import load_classifier

    fields = aspect_config(("a", "b"), ("neg", "pos"))
    assert fields["num_labels"] == 4 and fields["id2label"] == {0: "a:neg", 1: "a:pos", 2: "b:neg", 3: "b:pos"}
    broken = tmp_path / "broken"
    broken.mkdir()
    for item in tiny_aspect_classifier_dir.iterdir():
        (broken / item.name).write_bytes(item.read_bytes())
    config = json.loads((broken / "config.json").read_text())
    config["aspects"] = config["aspects"][:-1]  # 5 aspects x 3 labels over 18 outputs
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelSourceError, match="5 aspects x 3 labels but 18 outputs"):
        load_classifier(broken)


def write_emot(folder: Path) -> Path:
    """A small learnable EmoT folder: happy, sad, angry words; love and fear by their own words."""
    folder.mkdir()
    words = {"happy": POSITIVE, "anger": NEGATIVE, "sadness": ["sedih", "menangis"], "love": ["cinta", "sayang"]}
    words["fear"] = ["takut", "ngeri"]
    for name, count, seed in (("train_preprocess.csv", 60, 1), ("valid_preprocess.csv", 25, 2)):
        rows = []
        for index, (text, _) in enumerate(make_rows(count, seed)):
            label = EMOT.label_names[index % 5]
            rows.append([label, f"{text} {words[label][index % len(words[label])]}"])
        with open(folder / name, "w", encoding="utf-8", newline="") as handle:
            csv.writer(handle, lineterminator="\n").writerows([["label", "tweet"], *rows])
    return folder


def test_emot_trains_through_the_single_label_path(tiny_model_dir, tmp_path, cache_dir):
    data_dir = write_emot(tmp_path / "emot")
    run_dir = tmp_path / "emot-run"
    results = train_task(tiny_model_dir, "emot", data_dir, run_dir, cache_dir, num_train_epochs=1)
    config = AutoConfig.from_pretrained(run_dir / "best")
    assert list(config.id2label.values()) == list(EMOT.label_names) and config.indonlu_task == "emot"
    assert not getattr(config, "aspects", None)
    assert results["label_names"] == list(EMOT.label_names) and results["validation"]["num_examples"] == 25
    assert "aspects" not in results


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ({"task": "casaa"}, "did you mean 'casa'"),
        ({"task": "casa", "train_file": "t.csv", "validation_file": "v.csv"}, "drop --task"),
        ({"task": "emot", "label_names": ["a", "b"]}, "drop --task"),
    ],
)
def test_task_mistakes_are_one_line_before_any_work(given, said, tmp_path):
    for name in ("t.csv", "v.csv"):
        (tmp_path / name).write_text("text,label\nx,positive\n")
    given = {key: str(tmp_path / value) if key.endswith("_file") else value for key, value in given.items()}
    with pytest.raises(ArgumentError, match=said):
        DataArguments(**given)
