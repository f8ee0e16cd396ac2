"""One benchmark path in this fresh process; benchmarks/benchmark.py starts one per path, one after another.

    python benchmarks/paths.py NAME SPEC.json RESULT.json

A process per path keeps the measurements independent: each starts with an empty heap, has its own peak RSS and
GPU memory peak, inherits no accelerate state, and measures the matmul peak itself, before and after its timed
work, on the same threads and device. NAME is one of :data:`PATHS`; SPEC.json holds a :class:`Spec`; the path's
figures go to RESULT.json.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from inference import run_inference
from measure import (
    DeviceMemoryPeak,
    PeakRSSSampler,
    Timer,
    device_name,
    encoder_training_flops,
    load_average,
    measure_matmul_peak,
    process_max_rss_mib,
    release_freed_memory,
    write_text,
)
from trainer_baseline import load_rows, run_trainer
from transformers import AutoConfig
from tutorial_baseline import run_baseline

from hf_indosent.data.arguments import DataArguments
from hf_indosent.data.loading import load_data
from hf_indosent.data.tokenization import LENGTH_COLUMN, tokenize_dataset
from hf_indosent.modeling.loading import BEST_DIR, load_tokenizer
from hf_indosent.training.arguments import FineTuneArguments, ModelArguments
from hf_indosent.training.loop import train

COMPUTE_DTYPES = {"no": "float32", "bf16": "bfloat16", "fp16": "float16"}
"""Matmul dtype under each mixed-precision mode, whose measured peak the model FLOPs utilisation divides by."""


@dataclass(frozen=True)
class Spec:
    """Everything a path needs, shared by all paths of one run (written by benchmark.py as JSON)."""

    model: str
    data_dir: str
    work_dir: str
    device: str
    max_train_samples: int | None
    max_eval_samples: int | None
    batch_size: int
    epochs: int
    lr: float
    max_seq_len: int
    seed: int
    mixed_precision: str
    threads: int | None
    matmul_sizes: list[int]
    inference_batch_size: int
    inference_repeats: int
    progress: bool
    inference_model: str | None = None
    peer_attn_implementation: str = "sdpa"

    @property
    def compute_dtype(self) -> str:
        return COMPUTE_DTYPES[self.peer_mixed_precision]

    @property
    def peer_mixed_precision(self) -> str:
        """What Trainer runs in: the requested precision, or under 'auto' its own default (fp32)."""
        return "no" if self.mixed_precision == "auto" else self.mixed_precision

    def training_settings(self) -> dict[str, Any]:
        """The settings every training path gets alike: rows, batch size, epochs, lr, max_seq_len, seed, device."""
        names = ("max_train_samples", "max_eval_samples", "batch_size", "epochs", "lr", "max_seq_len", "seed", "device")
        return {name: getattr(self, name) for name in names}


def tutorial(spec: Spec) -> dict[str, Any]:
    """The IndoNLU tutorial's pipeline (fp32: it has no mixed precision)."""
    data_dir = Path(spec.data_dir)
    result = run_baseline(
        spec.model,
        data_dir / "train_preprocess.tsv",
        data_dir / "valid_preprocess.tsv",
        progress=spec.progress,
        attn_implementation=spec.peer_attn_implementation,
        **spec.training_settings(),
    )
    return result | {
        "train_flops_total": sum(result["train_flops"]),
        "final_val_f1": result["val_f1"][-1],
        "compute_dtype": "float32",
    }


def trainer(spec: Spec, *, group_by_length: bool) -> dict[str, Any]:
    """``transformers.Trainer`` with its documented settings, length grouping on or off."""
    result = run_trainer(
        spec.model,
        spec.data_dir,
        Path(spec.work_dir) / ("trainer-grouped" if group_by_length else "trainer"),
        mixed_precision=spec.peer_mixed_precision,
        group_by_length=group_by_length,
        attn_implementation=spec.peer_attn_implementation,
        progress=spec.progress,
        **spec.training_settings(),
    )
    return result | {"compute_dtype": spec.compute_dtype}


def ours(spec: Spec) -> dict[str, Any]:
    """Our data preparation (timed cold, in a fresh cache) and hf_indosent.training.loop.train with its defaults."""
    work_dir = Path(spec.work_dir)
    model_args = ModelArguments(model_name_or_path=spec.model)
    data_args = DataArguments(
        data_dir=spec.data_dir,
        max_seq_len=spec.max_seq_len,
        max_train_samples=spec.max_train_samples,
        max_eval_samples=spec.max_eval_samples,
        dataset_cache_dir=str(work_dir / "ours-datasets-cache"),
    )
    training_args = FineTuneArguments(
        output_dir=str(work_dir / "ours"),
        overwrite_output_dir=True,
        seed=spec.seed,
        learning_rate=spec.lr,
        per_device_train_batch_size=spec.batch_size,
        num_train_epochs=spec.epochs,
        early_stopping_patience=spec.epochs,  # equal epochs for every path: never stop early
        mixed_precision=None if spec.mixed_precision == "auto" else spec.mixed_precision,  # None: ours resolves it
    )
    tokenizer = load_tokenizer(spec.model)
    # The same calls as training.setup, timed on their own; train() below then finds them in the cache. PartialState
    # (not an Accelerator) so that train() still sets the mixed precision of the process's one AcceleratorState.
    with Timer() as prep:
        tokenized = tokenize_dataset(load_data(data_args, PartialState()), tokenizer, spec.max_seq_len)
    train_lengths = tokenized["train"][LENGTH_COLUMN]
    metrics = train(model_args, data_args, training_args)
    run_dir = Path(training_args.output_dir)
    history = [json.loads(line) for line in (run_dir / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    train_s = metrics["train_runtime_s"]
    tokens = sum(epoch["train"]["tokens"] for epoch in history)
    positions = sum(epoch["train"]["tokens"] / (1 - epoch["train"]["padding_fraction"]) for epoch in history)
    config = AutoConfig.from_pretrained(run_dir / BEST_DIR)
    num_labels = len(metrics["label_names"])
    settings = json.loads((run_dir / "args.json").read_text(encoding="utf-8"))  # as resolved by the run
    return {
        "settings": settings,
        "n_train": len(train_lengths),
        "data_prep_s": prep.seconds,
        "train_s": train_s,
        "samples_per_s": metrics["train_samples_per_second"],
        "train_real_tokens": tokens,
        "tokens_per_s": tokens / train_s,
        "padding_fraction": 1 - tokens / positions,
        "train_flops_total": spec.epochs * encoder_training_flops(config, train_lengths, num_labels=num_labels),
        "val_f1": [epoch["validation"]["f1"] for epoch in history],
        "val_accuracy": [epoch["validation"]["accuracy"] for epoch in history],
        "final_val_f1": history[-1]["validation"]["f1"],
        "best_epoch": metrics["best_epoch"],
        "compute_dtype": COMPUTE_DTYPES[settings["launch"]["mixed_precision"]],
        "best_dir": str(run_dir / BEST_DIR),
        "packing": settings["launch"].get("packing", False),
        "log": history,
    }


def inference(spec: Spec) -> dict[str, Any]:
    """Plain pipeline() against our predict path over the validation texts, with the model our loop trained."""
    if spec.inference_model is None:
        raise ValueError("the inference path needs spec.inference_model: the best/ folder the 'ours' path saved")
    rows = load_rows(spec.data_dir, None, spec.max_eval_samples, Path(spec.work_dir) / "inference-datasets-cache")
    result = run_inference(
        spec.inference_model,
        list(rows["validation"]["text"]),
        batch_size=spec.inference_batch_size,
        max_length=spec.max_seq_len,
        repeats=spec.inference_repeats,
        device=spec.device,
    )
    return result | {"compute_dtype": "float32"}


PATHS: dict[str, Callable[[Spec], dict[str, Any]]] = {
    "tutorial": tutorial,
    "trainer": partial(trainer, group_by_length=False),
    "trainer_grouped": partial(trainer, group_by_length=True),
    "ours": ours,
    "inference": inference,
}


def matmul_peaks(spec: Spec, when: str) -> list[dict[str, Any]]:
    """The matmul peak of fp32 and of the run's compute dtype, on the path's device and threads."""
    return [
        measure_matmul_peak(getattr(torch, dtype), spec.device, sizes=spec.matmul_sizes).as_dict() | {"when": when}
        for dtype in sorted(
            {"float32", spec.compute_dtype} | ({"bfloat16"} if spec.mixed_precision == "auto" else set())
        )
    ]


def run_path(name: str, spec: Spec) -> dict[str, Any]:
    """Run the path under the memory and time meters, measuring the matmul peak before and after it.

    Other jobs on a shared machine can slow any one peak measurement; two per process, at different times, and the
    best over every process of the run (benchmark.py) make a too-low peak, hence an invalid MFU, unlikely.
    """
    if spec.threads is not None:
        torch.set_num_threads(spec.threads)
    load_before = load_average()
    peaks = matmul_peaks(spec, "before")
    release_freed_memory()
    with PeakRSSSampler() as rss, DeviceMemoryPeak(spec.device) as device_memory, Timer(spec.device) as wall:
        figures = PATHS[name](spec)
    process_max_rss = process_max_rss_mib()  # before the second peak measurement allocates its matrices
    peaks += matmul_peaks(spec, "after")
    return figures | {
        "path": name,
        "device": spec.device,
        "device_name": device_name(spec.device),
        "torch_threads": torch.get_num_threads(),
        "matmul_peaks": peaks,
        "peak_rss_mib": rss.peak_mib,
        "rss_growth_mib": rss.peak_mib - rss.start_mib,
        "process_max_rss_mib": process_max_rss,
        "peak_device_memory_mib": device_memory.peak_mib,
        "wall_s": wall.seconds,
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=list(PATHS))
    parser.add_argument("spec", help="JSON file with the run's Spec (written by benchmark.py).")
    parser.add_argument("result", help="Write the path's figures here (JSON).")
    args = parser.parse_args(argv)
    spec = Spec(**json.loads(Path(args.spec).read_text(encoding="utf-8")))
    write_text(args.result, json.dumps(run_path(args.name, spec), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
