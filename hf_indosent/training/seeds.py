"""One training recipe over several seeds: how much of a score is the recipe and how much is luck.

``python scripts/seeds.py --seeds 42,1,2 --output_dir outputs/seeds --config configs/smsa-minilm-offline.yaml`` runs
``python scripts/train.py <the other arguments> --seed N --output_dir <output_dir>/seed-N`` once per seed, each in
its own process, so a seed that crashes is reported and the others still run. Each run's output goes to
``<output_dir>/seed-N.log``. At the end, ``<output_dir>/seeds.json`` holds every seed's validation metrics and their
mean and sample standard deviation (:func:`aggregate`), also printed as a Markdown table.

A multi-seed run takes hours, so it is resumable as a whole: ``seeds.json`` is rewritten after every seed, a stop
signal (Ctrl-C, SIGTERM, or SIGHUP when the terminal closes) is passed on to the seed training now (which stops after
its current step and saves a checkpoint, as it would alone), and running the same command again keeps the finished
seeds, resumes the stopped one from its last checkpoint and trains the rest. The output folder is locked while it
runs (:class:`~hf_indosent.core.folder_lock.FolderLock`): a second runner into it is refused at once.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hf_indosent.core.arguments import SEED_RANGE
from hf_indosent.core.files import write_json
from hf_indosent.core.folder_lock import FolderLock
from hf_indosent.core.shell import command
from hf_indosent.core.stopping import handled, leave_closed_terminal, say
from hf_indosent.metrics.scores import METRIC_NAMES
from hf_indosent.training.checkpoints import list_checkpoints

RESERVED = ("--seed", "--output_dir", "--resume_from_checkpoint")
"""Training options this script sets itself, one value per seed."""

REPORT = "seeds.json"
OVERWRITE = "--overwrite_output_dir"


def parse_seeds(text: str) -> list[int]:
    """``"42,1,2"`` -> ``[42, 1, 2]``; at least one, no repeats (a repeat would overwrite its own folder)."""
    try:
        seeds = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise ValueError(f"--seeds {text!r} must be integers separated by commas, e.g. 42,1,2") from None
    if not seeds:
        raise ValueError("--seeds is empty: give at least one seed, e.g. 42,1,2")
    outside = [seed for seed in seeds if seed not in SEED_RANGE]
    if outside:
        raise ValueError(f"--seeds {text!r}: {outside[0]} is out of range, use numbers from 0 to {SEED_RANGE[-1]}")
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


def wait_passing_signals(process: subprocess.Popen) -> tuple[int, int | None]:
    """Wait for a seed's training; stop signals sent to this script go to it, once per signal received.

    The training runs in its own session, so a Ctrl-C in the terminal (or the terminal closing) reaches it only
    through here: one Ctrl-C is one SIGINT (training stops after its current step with a checkpoint), a second one
    stops it at once, as when it runs alone. Python's own ``subprocess.run`` would kill it 0.25 s after a Ctrl-C,
    mid-checkpoint. A signal ignored at start (``nohup``) stays ignored here, as in the training."""
    received: list[int] = []

    def forward(signum: int, frame: Any) -> None:
        if signum == signal.SIGHUP:
            leave_closed_terminal()
        received.append(signum)
        process.send_signal(signum)

    with handled(forward):
        returncode = process.wait()
    return returncode, received[0] if received else None


def finished_result(run_dir: Path) -> dict[str, Any] | None:
    """Best epoch and validation metrics of a run that finished in ``run_dir`` (its ``metrics.json``), or ``None``."""
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        return None
    metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    return {"status": "ok", "best_epoch": metrics.get("best_epoch"), "validation": metrics["validation"]}


def restart_options(run_dir: Path, train_args: Sequence[str]) -> list[str]:
    """How to train into ``run_dir`` again: resume its last complete checkpoint, or start over if it holds none."""
    if not run_dir.exists() or OVERWRITE in train_args:
        return []
    if list_checkpoints(run_dir):
        return ["--resume_from_checkpoint", "latest"]
    return [OVERWRITE]  # a run stopped before its first checkpoint: nothing in it to keep


def run_seed(train_command: Sequence[str], train_args: Sequence[str], seed: int, output_dir: Path) -> dict[str, Any]:
    """Train one seed in a subprocess; its result: status, exit code, seconds, and validation metrics or the error.

    A seed an earlier run of this command finished is reported again, not retrained (unless ``--overwrite_output_dir``
    is among the training options); one it stopped resumes from its last checkpoint."""
    run_dir = output_dir / f"seed-{seed}"
    log = output_dir / f"seed-{seed}.log"
    result: dict[str, Any] = {"seed": seed, "output_dir": str(run_dir), "log": str(log)}
    previous = None if OVERWRITE in train_args else finished_result(run_dir)
    if previous is not None:
        return {**result, "returncode": 0, "seconds": 0.0, "reused": True, **previous}
    restart = restart_options(run_dir, train_args)
    command = [*train_command, *train_args, "--seed", str(seed), "--output_dir", str(run_dir), *restart]
    started = time.perf_counter()
    with open(log, "a" if restart else "w", encoding="utf-8") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        returncode, signum = wait_passing_signals(process)
    result |= {"returncode": returncode, "seconds": time.perf_counter() - started, "resumed": bool(restart)}
    if signum is not None and returncode != 0:
        return {**result, "status": "stopped", "signal": signal.Signals(signum).name, "error": last_line(log)}
    finished = finished_result(run_dir) if returncode == 0 else None
    if finished is None:
        why = last_line(log) if returncode != 0 else f"exited 0 but wrote no {run_dir / 'metrics.json'}"
        return {**result, "status": "failed", "error": why}
    return {**result, **finished}


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
            rows.append([str(result["seed"]), f"{result.get('status')}: {error}", *["-"] * len(METRIC_NAMES), "-"])
    count = len(summary["succeeded"])
    means = [_mean_std(summary["validation"].get(name)) for name in METRIC_NAMES]
    rows.append([f"mean ± std ({count} run{'s' if count != 1 else ''})", "", *means, ""])
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def check_same_recipe(output_dir: Path, train_args: Sequence[str]) -> None:
    """Refuse to mix seeds of two recipes in one folder: a finished seed is only reused for the same options
    (``--overwrite_output_dir`` aside: it says whether to keep finished seeds, not how to train)."""
    path = output_dir / REPORT
    if not path.is_file() or OVERWRITE in train_args:
        return
    earlier = json.loads(path.read_text(encoding="utf-8")).get("train_args")
    recipe = [arg for arg in train_args if arg != OVERWRITE]
    if earlier is not None and [arg for arg in earlier if arg != OVERWRITE] != recipe:
        raise ValueError(
            f"{output_dir} holds seeds of other training options ({command(*earlier) or 'none'}; now "
            f"{command(*train_args) or 'none'}): choose another --output_dir, or pass {OVERWRITE} to train every "
            "seed again"
        )


def run_seeds(
    seeds: Sequence[int], output_dir: Path, train_args: Sequence[str], train_command: Sequence[str]
) -> dict[str, Any]:
    """Every seed in turn (a failure does not stop the others, a Ctrl-C does), ``seeds.json`` after each; the output
    folder locked throughout."""
    check_training_args(train_args)
    with FolderLock(output_dir, job="seeds run"):
        check_same_recipe(output_dir, train_args)
        return train_seeds(seeds, output_dir, train_args, train_command)


def train_seeds(
    seeds: Sequence[int], output_dir: Path, train_args: Sequence[str], train_command: Sequence[str]
) -> dict[str, Any]:
    """The seeds' trainings, one after another; progress lines survive a closed terminal (:func:`say`)."""
    results: list[dict[str, Any]] = []
    report: dict[str, Any] = {}
    for seed in seeds:
        run_dir, log = output_dir / f"seed-{seed}", output_dir / f"seed-{seed}.log"
        say(f"seed {seed}: training into {run_dir} (log: {log})", sys.stdout)
        result = run_seed(train_command, train_args, seed, output_dir)
        if result.get("reused"):
            outcome = f"already trained by an earlier run, kept: validation f1 {result['validation']['f1']:.4f}"
        elif result["status"] == "ok":
            outcome = f"ok in {result['seconds'] / 60:.1f} min: validation f1 {result['validation']['f1']:.4f}"
        else:
            outcome = f"{result['status']} in {result['seconds'] / 60:.1f} min: {result['error']}"
        say(f"seed {seed}: {outcome}", sys.stdout)
        results.append(result)
        stopped = result["status"] == "stopped"
        left = list(seeds[len(results) :]) if stopped else []
        report = {"train_args": list(train_args), "runs": results, "summary": aggregate(results)}
        report |= {"complete": len(results) == len(seeds)} | ({"not_run": left} if left else {})
        write_json(output_dir / REPORT, report)
        if stopped:
            break
    return report


def main(argv: Sequence[str] | None = None, *, train_script: Path) -> int:
    """The command line (``train_script``: scripts/train.py): exit 0 when every seed trained, 1 when one failed (the
    others are still reported) or the folder is another runner's, 2 on a usage error, 128 + the signal's number when
    stopped by a stop signal (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP; rerun to continue)."""
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
    try:
        report = run_seeds(seeds, Path(args.output_dir), train_args, [sys.executable, str(train_script)])
    except ValueError as err:
        say(f"seeds.py: error: {err}", sys.stderr)
        return 2
    except OSError as err:  # the folder is another runner's (FolderLockedError), or cannot be written
        say(f"seeds.py: error: {err}", sys.stderr)
        return 1
    say(markdown_table(report["runs"], report["summary"]), sys.stdout)
    say(f"Wrote {Path(args.output_dir) / REPORT}", sys.stdout)
    last = report["runs"][-1]
    if last["status"] == "stopped":
        say(
            f"Stopped by {last['signal']} during seed {last['seed']} (its checkpoint is in {last['output_dir']}). "
            "Run the same command again to continue: finished seeds are kept, this one resumes, the rest train.",
            sys.stderr,
        )
        return 128 + signal.Signals[last["signal"]].value
    return 1 if report["summary"]["failed"] else 0
