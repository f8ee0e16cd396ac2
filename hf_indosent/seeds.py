"""One training recipe over several seeds: how much of a score is the recipe and how much is luck.

``python scripts/seeds.py --seeds 42,1,2 --output_dir outputs/seeds --config configs/smsa-minilm-offline.yaml`` runs
``python scripts/train.py <the other arguments> --seed N --output_dir <output_dir>/seed-N`` once per seed, each in
its own process, so a seed that crashes is reported and the others still run. Each run's output goes to
``<output_dir>/seed-N.log``. At the end, ``<output_dir>/seeds.json`` holds every seed's validation metrics and their
mean and sample standard deviation (:func:`aggregate`), also printed as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hf_indosent.metrics import METRIC_NAMES
from hf_indosent.reporting import write_json

RESERVED = ("--seed", "--output_dir")
"""Training options this script sets itself, one value per seed."""


def parse_seeds(text: str) -> list[int]:
    """``"42,1,2"`` -> ``[42, 1, 2]``; at least one, no repeats (a repeat would overwrite its own folder)."""
    try:
        seeds = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise ValueError(f"--seeds {text!r} must be integers separated by commas, e.g. 42,1,2") from None
    if not seeds:
        raise ValueError("--seeds is empty: give at least one seed, e.g. 42,1,2")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {text!r} repeats a seed: each seed is one run folder, list it once")
    return seeds


def check_training_args(train_args: Sequence[str]) -> None:
    for arg in train_args:
        if arg.split("=", 1)[0] in RESERVED:
            raise ValueError(
                f"{arg!r} is set per seed by this script: drop it (use --seeds, and --output_dir for the parent folder)"
            )


def last_line(log: Path) -> str:
    """The final message of a run (its one-line error, when it failed); progress bars end lines with \\r."""
    lines = log.read_text(encoding="utf-8", errors="replace").replace("\r", "\n").splitlines() if log.is_file() else []
    return next((line.strip() for line in reversed(lines) if line.strip()), "no output")


def run_seed(train_command: Sequence[str], train_args: Sequence[str], seed: int, output_dir: Path) -> dict[str, Any]:
    """Train one seed in a subprocess; its result: status, exit code, seconds, and validation metrics or the error."""
    run_dir = output_dir / f"seed-{seed}"
    log = output_dir / f"seed-{seed}.log"
    command = [*train_command, *train_args, "--seed", str(seed), "--output_dir", str(run_dir)]
    started = time.perf_counter()
    with open(log, "w", encoding="utf-8") as handle:
        returncode = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, check=False).returncode
    result: dict[str, Any] = {
        "seed": seed,
        "output_dir": str(run_dir),
        "log": str(log),
        "returncode": returncode,
        "seconds": time.perf_counter() - started,
    }
    metrics_path = run_dir / "metrics.json"
    if returncode != 0 or not metrics_path.is_file():
        why = last_line(log) if returncode != 0 else f"exited 0 but wrote no {metrics_path}"
        return {**result, "status": "failed", "error": why}
    metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    return {**result, "status": "ok", "best_epoch": metrics.get("best_epoch"), "validation": metrics["validation"]}


def aggregate(results: list[dict]) -> dict[str, Any]:
    """Mean and sample standard deviation (ddof=1; ``None`` below two runs) of each validation metric over the
    seeds that succeeded, and which seeds failed."""
    succeeded = [result for result in results if result.get("status") == "ok"]
    summary: dict[str, Any] = {}
    for name in METRIC_NAMES:
        values = [float(result["validation"][name]) for result in succeeded if name in result["validation"]]
        if values:
            summary[name] = {
                "mean": statistics.fmean(values),
                "std": statistics.stdev(values) if len(values) > 1 else None,
                "n": len(values),
            }
    return {
        "seeds": [result["seed"] for result in results],
        "succeeded": [result["seed"] for result in succeeded],
        "failed": [{"seed": r["seed"], "error": r.get("error")} for r in results if r.get("status") != "ok"],
        "validation": summary,
    }


def _mean_std(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return "-"
    return f"{entry['mean']:.4f} ± {entry['std']:.4f}" if entry["std"] is not None else f"{entry['mean']:.4f}"


def markdown_table(results: list[dict], summary: dict[str, Any]) -> str:
    """Per-seed validation metrics, then mean ± std; failed seeds keep their row with the error."""
    header = ["seed", "status", *METRIC_NAMES, "best epoch"]
    rows = [header, ["---"] * len(header)]
    for result in results:
        if result.get("status") == "ok":
            cells = [f"{result['validation'][name]:.4f}" for name in METRIC_NAMES]
            rows.append([str(result["seed"]), "ok", *cells, str(result.get("best_epoch"))])
        else:
            error = str(result.get("error", "")).replace("|", "\\|")
            rows.append([str(result["seed"]), f"failed: {error}", *["-"] * len(METRIC_NAMES), "-"])
    count = len(summary["succeeded"])
    means = [_mean_std(summary["validation"].get(name)) for name in METRIC_NAMES]
    rows.append([f"mean ± std ({count} run{'s' if count != 1 else ''})", "", *means, ""])
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def run_seeds(
    seeds: Sequence[int], output_dir: Path, train_args: Sequence[str], train_command: Sequence[str]
) -> dict[str, Any]:
    """Every seed in turn (a failure does not stop the others), then ``output_dir``/seeds.json."""
    check_training_args(train_args)
    output_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for seed in seeds:
        print(f"seed {seed}: training into {output_dir / f'seed-{seed}'} (log: {output_dir / f'seed-{seed}.log'})")
        result = run_seed(train_command, train_args, seed, output_dir)
        outcome = f"validation f1 {result['validation']['f1']:.4f}" if result["status"] == "ok" else result["error"]
        print(f"seed {seed}: {result['status']} in {result['seconds'] / 60:.1f} min: {outcome}", flush=True)
        results.append(result)
    report = {"train_args": list(train_args), "runs": results, "summary": aggregate(results)}
    write_json(output_dir / "seeds.json", report)
    return report


def main(argv: Sequence[str] | None = None, *, train_script: Path) -> int:
    """The command line (``train_script``: scripts/train.py): exit 0 when every seed trained, 1 when one failed (the
    others are still reported), 2 on a usage error."""
    parser = argparse.ArgumentParser(
        prog="seeds.py",
        description="Run one training recipe over several seeds and report mean ± std of the validation metrics. "
        "Every other argument is passed to scripts/train.py.",
        allow_abbrev=False,  # --seed (a training option) must not be read as --seeds
    )
    parser.add_argument("--seeds", required=True, help="Comma-separated seeds, e.g. 42,1,2.")
    parser.add_argument("--output_dir", required=True, help="Parent folder: seed-N/ per seed, and seeds.json.")
    args, train_args = parser.parse_known_args(argv)
    try:
        seeds = parse_seeds(args.seeds)
        check_training_args(train_args)
    except ValueError as err:
        parser.error(str(err))
    report = run_seeds(seeds, Path(args.output_dir), train_args, [sys.executable, str(train_script)])
    print(markdown_table(report["runs"], report["summary"]))
    print(f"Wrote {Path(args.output_dir) / 'seeds.json'}")
    return 1 if report["summary"]["failed"] else 0
