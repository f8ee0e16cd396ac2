"""How far a trained run's calibration can be trusted: in-sample and cross-fitted ECE, the noise floor, ensembles.

    python benchmarks/calibration_check.py outputs/seeds-minilm-vocab10k/seed-{42,1,2} --output outputs/calib.json

Training fits the temperature T on the validation split and reports the expected calibration error (ECE) on that same
split. This script scores each run's ``best/`` on validation again (through the ``Predictor``, i.e. what a user gets)
and prints, per run:

* ``ECE (T on all)``: the training's own figure, T fitted by NLL on all of validation and scored there;
* ``ECE cross-fitted``: T fitted on one random half, ECE scored on the other, both ways, averaged over ``--splits``
  random halvings: a held-out estimate (pessimistic: a half has fewer texts per bin, and ECE grows with noise);
* ``noise floor``: the mean ECE of a perfectly calibrated model with the same confidences on as many texts
  (correctness drawn with probability = confidence): binned ECE is never 0 on 1,260 texts;
* ``lowest ECE``: the best any single temperature could do on these logits, and the same choice cross-fitted (T
  with the lowest ECE on one half, scored on the other): for reference only, since choosing T by the figure it is
  scored with is not a calibration method;

and, for two or more runs, the same for the mean of their logits (a seed ensemble, which cannot be baked into one
model). Measurement only: nothing here is part of the package.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import softmax
from sklearn.metrics import f1_score

from hf_indosent.data.smsa import load_smsa
from hf_indosent.inference.predictor import Predictor
from hf_indosent.training.calibration import CONFIG_KEY, calibration_report, expected_calibration_error, fit_temperature


def validation_logits(best: Path, texts: list[str], label_names: list[str]) -> np.ndarray:
    """Logits of ``best/`` (columns in ``label_names`` order) up to a per-row constant, which softmax ignores, with a
    baked-in temperature undone."""
    predictor = Predictor(best)
    rows = predictor(texts)
    probs = np.array([[row["scores"][name] for name in label_names] for row in rows], dtype=np.float64)
    temperature = getattr(predictor.pipe.model.config, CONFIG_KEY, None) or 1.0
    return np.log(np.clip(probs, 1e-300, None)) * float(temperature)


def cross_fitted_ece(
    logits: np.ndarray,
    labels: np.ndarray,
    splits: int,
    rng: np.random.Generator,
    fit: Callable[[np.ndarray, np.ndarray], float] = fit_temperature,
) -> float:
    """ECE on one random half with T fitted (by ``fit``) on the other, both ways, averaged over ``splits`` halvings."""
    scores = []
    for _ in range(splits):
        order = rng.permutation(len(labels))
        halves = order[: len(order) // 2], order[len(order) // 2 :]
        for fitted, score in (halves, halves[::-1]):
            temperature = fit(logits[fitted], labels[fitted])
            scores.append(expected_calibration_error(softmax(logits[score] / temperature, axis=1), labels[score]))
    return float(np.mean(scores))


def noise_floor(probs: np.ndarray, draws: int, rng: np.random.Generator) -> float:
    """Mean ECE when each text is right with probability exactly its confidence (a perfectly calibrated model)."""
    predicted, confidence = probs.argmax(axis=1), probs.max(axis=1)
    scores = []
    for _ in range(draws):
        right = rng.random(len(confidence)) < confidence
        labels = np.where(right, predicted, (predicted + 1) % probs.shape[1])
        scores.append(expected_calibration_error(probs, labels))
    return float(np.mean(scores))


def lowest_ece(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The temperature (searched on a log grid, 0.25 to 4) whose ECE is lowest, and that ECE."""
    temperatures = np.exp(np.linspace(math.log(0.25), math.log(4.0), 400))
    scores = [expected_calibration_error(softmax(logits / t, axis=1), labels) for t in temperatures]
    best = int(np.argmin(scores))
    return float(temperatures[best]), float(scores[best])


def check(name: str, logits: np.ndarray, labels: np.ndarray, splits: int, seed: int) -> dict[str, Any]:
    """Every figure of one run's (or ensemble's) logits; T, NLL and ECE before/after are training's own report."""
    rng = np.random.default_rng(seed)
    report = calibration_report(logits, labels)
    calibrated = softmax(logits / report["temperature"], axis=1)
    best_t, best_ece = lowest_ece(logits, labels)
    return {
        "run": name,
        "macro_f1": float(f1_score(labels, logits.argmax(axis=1), average="macro")),
        **report,
        "ece_cross_fitted": cross_fitted_ece(logits, labels, splits, rng),
        "noise_floor": noise_floor(calibrated, 200, rng),
        "lowest_ece_temperature": best_t,
        "lowest_ece": best_ece,
        "lowest_ece_cross_fitted": cross_fitted_ece(
            logits, labels, splits, rng, lambda fit_logits, fit_labels: lowest_ece(fit_logits, fit_labels)[0]
        ),
    }


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| run | macro F1 | T | ECE before | ECE (T on all) | ECE cross-fitted | noise floor | lowest ECE (at T) "
        "| the same, cross-fitted |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['run']} | {r['macro_f1']:.4f} | {r['temperature']:.3f} | {r['ece_before']:.4f} | "
            f"{r['ece_after']:.4f} | {r['ece_cross_fitted']:.4f} | {r['noise_floor']:.4f} | "
            f"{r['lowest_ece']:.4f} ({r['lowest_ece_temperature']:.3f}) | {r['lowest_ece_cross_fitted']:.4f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="training run folders (each with best/)")
    parser.add_argument("--data_dir", default="../shared/smsa")
    parser.add_argument("--splits", type=int, default=20, help="random halvings for the cross-fitted ECE")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, help="JSON with every figure")
    args = parser.parse_args(argv)
    missing = [str(run) for run in args.runs if not (run / "best" / "config.json").is_file()]
    if missing:
        parser.error(f"no trained best/ in {missing}: pass training run folders")
    validation = load_smsa(data_dir=args.data_dir)["validation"]
    labels = np.array(validation["label"])
    names = validation.features["label"].names
    logits = {str(run): validation_logits(run / "best", list(validation["text"]), names) for run in args.runs}
    results = [check(name, values, labels, args.splits, args.seed) for name, values in logits.items()]
    if len(logits) > 1:
        ensemble = np.mean(list(logits.values()), axis=0)
        results.append(check(f"mean logits of {len(logits)} runs", ensemble, labels, args.splits, args.seed))
    print(table(results))
    if args.output:
        args.output.write_text(json.dumps(results, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
