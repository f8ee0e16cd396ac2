"""Temperature scaling: make a classifier's probabilities mean what they say, without changing a single label.

A fine-tuned transformer is usually over-confident: of the texts it scores 0.99, fewer than 99 % are right. Temperature
scaling (Guo et al., 2017) divides the logits by one number T > 1 fitted on held-out data (the validation split) by
minimising the negative log-likelihood; argmax, hence every label and the accuracy/F1, stays the same.

* :func:`fit_temperature` finds T from validation logits and labels;
* :func:`expected_calibration_error` (ECE) measures the gap between confidence and accuracy;
* :func:`calibration_report` puts both together, before and after, for metrics.json;
* :func:`apply_temperature` folds T into the model's classifier layer (weight and bias divided by T), so the saved
  model, and a plain ``pipeline("text-classification")`` on it, returns the calibrated probabilities.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from torch import nn

from hf_indosent.modeling.folders import BEST_DIR

LOG_T_BOUNDS = (math.log(1e-2), math.log(1e2))
"""Where T is searched: 0.01 to 100, far beyond what a trained classifier needs (typically 1 to 3)."""
CONFIG_KEY = "calibration_temperature"
"""The config attribute :func:`apply_temperature` records T in, so the model says it is calibrated (and by what)."""


def _as_array(values: Any, name: str, ndim: int) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        # float32 first: numpy has no bfloat16, and half precision would round the logits.
        values = (values.float() if values.is_floating_point() else values).detach().cpu().numpy()
    array = np.asarray(values)
    if array.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {array.shape}")
    return array


def _checked(scores: Any, labels: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``scores`` (n, num_labels) as float64 and ``labels`` (n,) as int ids within range; a ValueError otherwise."""
    values = _as_array(scores, name, 2).astype(np.float64)
    ids = _as_array(labels, "labels", 1)
    if len(ids) != len(values) or len(ids) == 0:
        raise ValueError(f"{name} has {len(values)} rows and labels {len(ids)}: give one label id per row (n > 0)")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} holds NaN or infinite values: compute them from a model that trained without them")
    if not np.issubdtype(ids.dtype, np.integer) or ids.min() < 0 or ids.max() >= values.shape[1]:
        raise ValueError(
            f"labels must be integer ids in 0..{values.shape[1] - 1} (one per column of {name}); got {ids[:5]}... "
            "(the masked SmSA test split has -1: calibrate on validation)"
        )
    return values, ids.astype(np.int64)


def _nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of ``labels`` under softmax(logits / T)."""
    return float(-log_softmax(logits / temperature, axis=1)[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: Any, labels: Any) -> float:
    """The T > 0 minimising the NLL of softmax(logits / T) on (held-out) ``labels``.

    A bounded scalar search over log T: one parameter, a smooth objective, no learning rate to tune and no risk of
    stepping to T <= 0.
    """
    values, ids = _checked(logits, labels, "logits")
    result = minimize_scalar(
        lambda log_t: _nll(values, ids, math.exp(log_t)), bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-6}
    )
    return math.exp(result.x)


def expected_calibration_error(probs: Any, labels: Any, bins: int = 15) -> float:
    """ECE: the accuracy-vs-confidence gap per equal-width confidence bin, weighted by the bin's share of rows."""
    if not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins={bins!r} must be a positive integer (15 is the usual choice)")
    values, ids = _checked(probs, labels, "probs")
    if values.min() < 0 or not np.allclose(values.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError("probs must be probabilities (rows >= 0 summing to 1): apply softmax to logits first")
    confidence = values.max(axis=1)
    correct = values.argmax(axis=1) == ids
    # Bins (0, 1/bins], ..., ((bins-1)/bins, 1]: a confidence of exactly 1 belongs to the last one.
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    gap = 0.0
    for index in range(bins):
        members = which == index
        if members.any():
            gap += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(gap)


def calibration_report(logits: Any, labels: Any, bins: int = 15) -> dict[str, Any]:
    """T fitted on ``logits``/``labels`` and what it changes: NLL and ECE before and after (for metrics.json)."""
    values, ids = _checked(logits, labels, "logits")
    temperature = fit_temperature(values, ids)
    return {
        "temperature": temperature,
        "num_examples": len(ids),
        "bins": bins,
        "nll_before": _nll(values, ids, 1.0),
        "nll_after": _nll(values, ids, temperature),
        "ece_before": expected_calibration_error(softmax(values, axis=1), ids, bins),
        "ece_after": expected_calibration_error(softmax(values / temperature, axis=1), ids, bins),
    }


def classifier_layer(model: nn.Module, num_labels: int | None = None) -> nn.Linear:
    """The last ``nn.Linear`` with ``num_labels`` outputs: the layer producing the logits (BERT's ``classifier``,
    RoBERTa's ``classifier.out_proj``, ...). ``num_labels`` defaults to ``model.config.num_labels``."""
    if num_labels is None:
        num_labels = getattr(getattr(model, "config", None), "num_labels", None)
        if num_labels is None:
            raise ValueError(f"{type(model).__name__} has no config.num_labels: pass num_labels=")
    layers = [layer for layer in model.modules() if isinstance(layer, nn.Linear) and layer.out_features == num_labels]
    if not layers:
        raise ValueError(
            f"{type(model).__name__} has no nn.Linear layer with {num_labels} outputs to scale: temperature scaling "
            "needs a classification head (e.g. AutoModelForSequenceClassification), or pass the right num_labels="
        )
    return layers[-1]


def apply_temperature(model: nn.Module, temperature: float, num_labels: int | None = None) -> nn.Linear:
    """Divide the classifier layer's weight and bias by ``temperature`` in place; returns that layer.

    Afterwards the model's logits are the old ones divided by T, so saved with ``save_pretrained`` it serves
    calibrated probabilities anywhere, labels unchanged. T is recorded in ``model.config.calibration_temperature``;
    a model that already has one is refused, since scaling twice would divide by T twice.
    """
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature={temperature!r} must be a finite number > 0 (from fit_temperature)")
    config = getattr(model, "config", None)
    previous = getattr(config, CONFIG_KEY, None)
    if previous is not None:
        raise ValueError(
            f"this model is already calibrated (config.{CONFIG_KEY}={previous}): apply the temperature once, to the "
            "uncalibrated model"
        )
    layer = classifier_layer(model, num_labels)
    with torch.no_grad():
        layer.weight.div_(temperature)
        if layer.bias is not None:
            layer.bias.div_(temperature)
    if config is not None:
        setattr(config, CONFIG_KEY, float(temperature))
    return layer


def earlier_calibration(run_dir: Path) -> dict[str, Any] | None:
    """The report of the calibration best/ already carries (its config records T), or None when it has none."""
    config = json.loads((run_dir / BEST_DIR / "config.json").read_text(encoding="utf-8"))
    if config.get(CONFIG_KEY) is None:
        return None
    metrics = run_dir / "metrics.json"
    report = json.loads(metrics.read_text(encoding="utf-8")).get("calibration") if metrics.is_file() else None
    if report and report.get("temperature") == config[CONFIG_KEY]:
        return report
    return {"temperature": config[CONFIG_KEY]}  # metrics.json was not written after it (a kill): T alone
