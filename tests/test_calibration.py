"""Temperature scaling: T fitted by NLL, ECE, and T folded into a model's classifier so pipeline() is calibrated."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import log_softmax, softmax
from torch import nn
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig, BertForSequenceClassification
from transformers import pipeline as hf_pipeline

from hf_indosent.training.calibration import (
    CONFIG_KEY,
    apply_temperature,
    calibration_report,
    classifier_layer,
    expected_calibration_error,
    fit_temperature,
)

OVERCONFIDENCE = 3.0


@pytest.fixture(scope="module")
def calibrated_logits() -> tuple[np.ndarray, np.ndarray]:
    """Logits whose softmax is the true label distribution (labels are drawn from it): T should come out as 1."""
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 1.5, size=(4000, 3))
    labels = np.array([rng.choice(3, p=p) for p in softmax(logits, axis=1)])
    return logits, labels


def nll(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(-log_softmax(logits, axis=1)[np.arange(len(labels)), labels].mean())


def test_temperature_undoes_overconfidence_without_changing_a_label(calibrated_logits):
    logits, labels = calibrated_logits
    overconfident = logits * OVERCONFIDENCE
    temperature = fit_temperature(overconfident, labels)
    assert temperature == pytest.approx(OVERCONFIDENCE, rel=0.1)
    scaled = overconfident / temperature
    assert (scaled.argmax(axis=1) == overconfident.argmax(axis=1)).all()
    assert nll(scaled, labels) < nll(overconfident, labels)
    before = expected_calibration_error(softmax(overconfident, axis=1), labels)
    after = expected_calibration_error(softmax(scaled, axis=1), labels)
    assert after < before / 3
    assert fit_temperature(logits, labels) == pytest.approx(1.0, abs=0.1)
    # Torch tensors are taken as they come out of a model.
    assert fit_temperature(torch.tensor(overconfident), torch.tensor(labels)) == pytest.approx(temperature)


def test_calibration_report(calibrated_logits):
    logits, labels = calibrated_logits
    report = calibration_report(logits * OVERCONFIDENCE, labels, bins=10)
    assert report["temperature"] == pytest.approx(fit_temperature(logits * OVERCONFIDENCE, labels))
    assert report["nll_after"] < report["nll_before"] and report["ece_after"] < report["ece_before"]
    assert report["num_examples"] == 4000 and report["bins"] == 10


def test_expected_calibration_error_by_hand():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.0, 1.0]])
    labels = np.array([0, 1, 1, 1])
    # Bins of 0.1: {0.9}: right, gap 0.1; {0.6}: wrong, gap 0.6; {0.8}: right, gap 0.2; {1.0} (last bin): gap 0.
    assert expected_calibration_error(probs, labels, bins=10) == pytest.approx((0.1 + 0.6 + 0.2 + 0.0) / 4)
    # One bin: |accuracy 3/4 - mean confidence 0.825|.
    assert expected_calibration_error(probs, labels, bins=1) == pytest.approx(abs(0.75 - 0.825))


@pytest.mark.parametrize(
    ("logits", "labels", "message"),
    [
        ([[1.0, 2.0]], [2], r"labels must be integer ids in 0\.\.1"),
        ([[1.0, 2.0]], [-1], "masked SmSA test split"),
        ([[1.0, 2.0]], [0, 1], "1 rows and labels 2"),
        ([[1.0, math.nan]], [0], "NaN or infinite"),
        ([1.0, 2.0], [0], "logits must be 2-D"),
        ([[1.0, 2.0]], [0.5], "integer ids"),
    ],
)
def test_bad_inputs_are_named(logits, labels, message):
    with pytest.raises(ValueError, match=message):
        fit_temperature(logits, labels)


def test_ece_refuses_logits_and_bad_bins():
    with pytest.raises(ValueError, match="apply softmax to logits first"):
        expected_calibration_error([[2.0, -1.0]], [0])
    with pytest.raises(ValueError, match="bins=0 must be a positive integer"):
        expected_calibration_error([[0.5, 0.5]], [0], bins=0)


def tiny_bert(num_labels: int = 3) -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        num_labels=num_labels,
    )
    return BertForSequenceClassification(config).eval()


def test_apply_temperature_divides_the_logits():
    model = tiny_bert()
    inputs = {"input_ids": torch.randint(0, 64, (8, 12)), "attention_mask": torch.ones(8, 12, dtype=torch.long)}
    with torch.no_grad():
        before = model(**inputs).logits
    layer = apply_temperature(model, 2.5)
    assert layer is model.classifier
    with torch.no_grad():
        after = model(**inputs).logits
    assert torch.equal(after.argmax(dim=1), before.argmax(dim=1))
    torch.testing.assert_close(after.softmax(dim=1), (before / 2.5).softmax(dim=1))
    assert getattr(model.config, CONFIG_KEY) == 2.5
    with pytest.raises(ValueError, match="already calibrated"):
        apply_temperature(model, 2.5)


def test_a_calibrated_model_serves_calibrated_probabilities_through_pipeline(tiny_model_dir, tmp_path):
    """Saved after apply_temperature, plain transformers gives softmax(logits / T) with the same labels."""
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=3).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    texts = ["makanan nya enak sekali .", "pelayanan lambat dan kasar", "rapat partai di kantor"]
    with torch.no_grad():
        logits = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits
    apply_temperature(model, 0.5)  # T < 1 sharpens: makes the change easy to see on a random head
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    classify = hf_pipeline("text-classification", model=str(tmp_path), top_k=None, device="cpu")
    for row, result in zip((logits / 0.5).softmax(dim=1), classify(texts), strict=True):
        scores = {item["label"]: item["score"] for item in result}
        assert [scores[f"LABEL_{i}"] for i in range(3)] == pytest.approx(row.tolist(), abs=1e-5)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert getattr(reloaded.config, CONFIG_KEY) == 0.5


def test_a_model_without_a_classifier_layer_is_named():
    with pytest.raises(ValueError, match=r"Sequential has no nn\.Linear layer with 3 outputs"):
        classifier_layer(nn.Sequential(nn.Linear(4, 5), nn.ReLU()), num_labels=3)
    with pytest.raises(ValueError, match=r"no config\.num_labels: pass num_labels="):
        apply_temperature(nn.Linear(4, 3), 2.0)
    head = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 3))
    assert apply_temperature(head, 2.0, num_labels=3) is head[2]


@pytest.mark.parametrize("temperature", [0.0, -1.0, math.nan, math.inf])
def test_a_bad_temperature_is_refused(temperature):
    with pytest.raises(ValueError, match="must be a finite number > 0"):
        apply_temperature(tiny_bert(), temperature)
