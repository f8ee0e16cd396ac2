"""``hf-indosent predict`` at scale: millions of rows, many processes (Accelerate), resumable, in input order.

A piece-wise run (``--resumable``, a Parquet output, or ``accelerate launch --num_processes N -m hf_indosent predict``)
cuts the input by position into pieces of ``--piece_size`` rows. Piece k belongs to process k % N
(``PartialState().process_index``), which predicts it on its own device (``PartialState().device``) with the
:class:`~hf_indosent.inference.predictor.Predictor` and commits it to the work folder ``<output>.parts/``: its stats,
then its
rows, each written to a temporary name and renamed. Every process reads the whole input and keeps its own pieces, so
no rows travel between processes and where a row lands never depends on timing.

When every piece is there the main process concatenates them in piece order into a temporary file beside ``--output``,
renames it into place and removes the work folder. A rerun after a kill (even SIGKILL) skips the committed pieces;
each piece is predicted on its own (its own chunks and batches), so the output is byte for byte that of an
uninterrupted run with the same number of processes. The folder's manifest (input, model, the arguments that change
the output, the number of processes) makes a rerun with anything different stop and say what differs, until
``--overwrite``.

Processes coordinate through the folder, not collectives: one barrier at the start, once the main process has
prepared the folder; at the end the main process waits for the files, so a slow process cannot trip a collective's
timeout. With several machines, ``--output`` must be on a file system they share.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import shutil
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from accelerate.utils import parse_flag_from_env
from tqdm.auto import tqdm

from hf_indosent.core.files import atomic_path
from hf_indosent.inference.arguments import InferenceArguments, PredictArguments
from hf_indosent.inference.inputs import InputSource, open_input
from hf_indosent.inference.model_task import model_labels
from hf_indosent.inference.outputs import concatenate_tables, result_columns, result_table, write_table
from hf_indosent.inference.predictor import Predictor, model_identity, resolve_backend, resolve_device
from hf_indosent.modeling.loading import baseline_folder

WORK_SUFFIX = ".parts"
MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
POLL_SECONDS = 0.5
FIRST_ERRORS = 3
"""Bad rows remembered per piece, for the summary's "first at row N"."""


def launch_state(inference: InferenceArguments) -> PartialState:
    """Accelerate's view of this launch. CPU processes (gloo) when asked (--device cpu, ACCELERATE_USE_CPU=1) or when
    there is no GPU: PartialState only forms a CPU process group when told it runs on CPUs."""
    cpu = inference.device == "cpu" or parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available()
    return PartialState(cpu=cpu)


def is_piecewise(inference: InferenceArguments, args: PredictArguments) -> bool:
    """Whether this run goes through the work folder: asked for, Parquet, or launched on several processes."""
    return args.resumable or args.output_format == "parquet" or launch_state(inference).num_processes > 1


@dataclass(frozen=True)
class Layout:
    """The work folder's files and the output's shape."""

    output: Path
    work: Path
    format: str
    columns: list[str]
    piece_size: int

    def piece(self, number: int) -> Path:
        return self.work / f"piece-{number:08d}.{self.format}"

    def stats(self, number: int) -> Path:
        return self.work / f"piece-{number:08d}.json"

    def process(self, index: int) -> Path:
        return self.work / f"process-{index:05d}.json"

    def committed(self) -> Iterator[int]:
        """Numbers of the pieces whose rows are in the folder (so are their stats: they are written first)."""
        for path in self.work.glob(f"piece-*.{self.format}"):
            yield int(path.stem.removeprefix("piece-"))


def run_piecewise(inference: InferenceArguments, args: PredictArguments) -> dict[str, int]:
    """Predict this process's pieces; on the main process also merge them and report. Returns rows and errors."""
    state = launch_state(inference)
    if state.num_processes > 1:
        args.check_piecewise(f"a launch on {state.num_processes} processes")
    device = process_device(state, inference)
    if baseline_folder(inference.model) is not None:
        raise ValueError(
            f"--model {inference.model!r} is a TF-IDF baseline: piece-wise predict (resumable, Parquet, several "
            "processes) runs transformer models; predict it in one go (drop --resumable, write .csv or .jsonl)"
        )
    model_path, backend = resolve_backend(inference.model, inference.backend, str(device))
    source = open_input(args.file, args.text_column, dataset=args.dataset, split=args.split)
    output = Path(args.output)
    aspects, label_names, _ = model_labels(model_path, inference.revision)
    columns = result_columns(
        label_names, include_text=args.text_in_output, include_scores=args.scores_in_output, aspects=aspects
    )
    layout = Layout(output, output.with_name(output.name + WORK_SUFFIX), args.output_format, columns, args.piece_size)
    manifest = {
        "version": MANIFEST_VERSION,
        "input": source.fingerprint(),
        "model": model_identity(model_path, inference.revision),
        "arguments": output_arguments(inference, args, device.type, backend),
        "processes": state.num_processes,
    }
    prepare_work_folder(layout, manifest, args.overwrite, state.is_main_process)
    state.wait_for_everyone()  # the folder is ready (reset, if --overwrite) before anyone writes to it

    started = time.perf_counter()
    predictor = Predictor.from_arguments(dataclasses.replace(inference, model=model_path, device=str(device)))
    total = source.count() if state.is_main_process else None
    with tqdm(total=total, unit=" rows", desc="predict", disable=not state.is_main_process, file=sys.stderr) as bar:
        counted: set[int] = set()
        advance(bar, layout, counted)  # pieces committed by an earlier run
        pieces = predict_own_pieces(predictor, source, layout, state, bar, counted)
        if not state.is_main_process:
            return {"rows": 0, "errors": 0}
        wait_for_pieces(layout, pieces, state.num_processes, bar, counted)
    concatenate_tables(map(layout.piece, range(pieces)), output, layout.format, columns)
    counts = report(layout, pieces, state.num_processes, time.perf_counter() - started)
    shutil.rmtree(layout.work)
    return counts


def process_device(state: PartialState, inference: InferenceArguments) -> torch.device:
    """``--device``, or the one Accelerate gives this process; one explicit GPU for every process is refused."""
    if inference.device is None:
        return torch.device("cpu") if state.device.type == "cpu" else state.device
    if state.num_processes > 1 and inference.device != "cpu":
        raise ValueError(
            f"--device {inference.device} would put all {state.num_processes} processes on that one device: drop "
            "--device, and each process uses its own (PartialState().device)"
        )
    return resolve_device(inference.device)


def output_arguments(
    inference: InferenceArguments, args: PredictArguments, device_type: str, backend: str
) -> dict[str, Any]:
    """The options that change the output's bytes (batching changes scores in their last digits); ``backend`` is the
    resolved one: the int8 fallback margin only counts where ``onnx-int8`` runs."""
    return {
        "--text_column": args.text_column,
        "--split": args.split,
        "--format": args.output_format,
        "--include_text": args.text_in_output,
        "--include_scores": args.scores_in_output,
        "--piece_size": args.piece_size,
        "--batch_size": inference.batch_size,
        "--max_batch_tokens": inference.max_batch_tokens,
        "--chunk_size": inference.chunk_size,
        "--max_length": inference.max_length,
        "--backend": inference.backend,
        "--int8_fallback_margin": inference.int8_fallback_margin if backend == "onnx-int8" else None,
        "device": device_type,
    }


# --------------------------------------------------------------------------------------------------------------
# The work folder


def differences(old: Mapping[str, Any], new: Mapping[str, Any], where: tuple[str, ...] = ()) -> list[str]:
    """``"input size 120 -> 130"``-style lines for every value that differs between two nested manifests."""
    found = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key)
        if isinstance(before, dict) and isinstance(after, dict):
            found += differences(before, after, (*where, key))
        elif before != after:
            found.append(f"{' '.join((*where, key))} {_shown(before)} -> {_shown(after)}")
    return found


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:20] + "..." + text[-12:]


def write_json(path: Path, content: Any) -> None:
    with atomic_path(path) as temp:
        temp.write_text(json.dumps(content, indent=1, ensure_ascii=False), encoding="utf-8")


def prepare_work_folder(layout: Layout, manifest: dict[str, Any], overwrite: bool, main: bool) -> None:
    """Refuse to resume a different run (every process checks, so all stop with the same line); the main process then
    starts the folder, or resets it with ``--overwrite``, and clears what a killed run left half-written (its
    temporary files, in the folder and beside the output)."""
    work = layout.work
    manifest = json.loads(json.dumps(manifest))  # as it reads back from disk
    recorded = work / MANIFEST
    if recorded.is_file() and not overwrite:
        changed = differences(json.loads(recorded.read_text(encoding="utf-8")), manifest)
        if changed:
            raise ValueError(
                f"{work} holds an unfinished run that differs from this one in {'; '.join(changed)}: rerun that "
                "run's command to finish it, or pass --overwrite to start again"
            )
    if not main:
        return
    if overwrite and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    for stale in [
        *work.glob(".*.tmp"),
        *work.glob("process-*.json"),
        *layout.output.parent.glob(f".{layout.output.name}.*.tmp"),
    ]:
        stale.unlink()
    if not recorded.is_file():
        write_json(recorded, manifest)


def advance(bar: tqdm, layout: Layout, counted: set[int]) -> None:
    """Move the progress bar by the rows of pieces committed (by any process) since it last looked."""
    if bar.disable:
        return
    for number in set(layout.committed()) - counted:
        counted.add(number)
        bar.update(json.loads(layout.stats(number).read_text(encoding="utf-8"))["rows"])


# --------------------------------------------------------------------------------------------------------------
# Predicting pieces


def pieces_of(rows: Iterable[Any], size: int) -> Iterator[tuple[int, list[Any]]]:
    """(number, rows) of consecutive pieces of ``size`` rows; only one piece is held at a time."""
    iterator = iter(rows)
    for number in itertools.count():
        piece = list(itertools.islice(iterator, size))
        if not piece:
            return
        yield number, piece


def predict_own_pieces(
    predictor: Predictor, source: InputSource, layout: Layout, state: PartialState, bar: tqdm, counted: set[int]
) -> int:
    """Predict and commit this process's uncommitted pieces (the others are read past); returns the input's number
    of pieces. Writes the process's throughput to the folder at the end."""
    started, done = time.perf_counter(), {"rows": 0, "errors": 0}
    pieces = 0
    for number, rows in pieces_of(source.rows(), layout.piece_size):
        pieces = number + 1
        if number % state.num_processes != state.process_index or layout.piece(number).exists():
            continue
        stats = predict_piece(predictor, layout, number, rows, bar)
        counted.add(number)
        advance(bar, layout, counted)
        done = {key: done[key] + stats[key] for key in done}
    seconds = time.perf_counter() - started
    write_json(layout.process(state.process_index), {**done, "seconds": seconds, "device": str(predictor.device)})
    return pieces


def predict_piece(predictor: Predictor, layout: Layout, number: int, rows: list[Any], bar: tqdm) -> dict[str, Any]:
    """Predict one piece on its own (so its bytes never depend on what ran before) and commit it."""
    start = number * layout.piece_size
    results = []
    for result in predictor.stream(rows):
        results.append(result)
        bar.update()
    errors = [[start + offset, result["error"]] for offset, result in enumerate(results) if result["error"]]
    stats = {"rows": len(rows), "errors": len(errors), "first_errors": errors[:FIRST_ERRORS]}
    commit_piece(layout, number, result_table(layout.columns, start, rows, results), stats)
    return stats


def commit_piece(layout: Layout, number: int, table: dict[str, list[Any]], stats: dict[str, Any]) -> None:
    """Stats first, then the rows under the piece's final name: a piece that exists is whole, and so are its stats."""
    write_json(layout.stats(number), stats)
    with atomic_path(layout.piece(number)) as temp:
        write_table(temp, table, layout.format)


def wait_for_pieces(layout: Layout, pieces: int, processes: int, bar: tqdm, counted: set[int]) -> None:
    """Until every piece is committed and every process has reported (the main process's wait; no collective)."""
    while True:
        advance(bar, layout, counted)
        if len(counted) >= pieces and all(layout.process(index).is_file() for index in range(processes)):
            return
        time.sleep(POLL_SECONDS)


def report(layout: Layout, pieces: int, processes: int, seconds: float) -> dict[str, int]:
    """The summary on stderr: rows, bad rows (the first by its global row number), rows/s per process and overall."""
    stats = [json.loads(layout.stats(number).read_text(encoding="utf-8")) for number in range(pieces)]
    rows, errors = sum(piece["rows"] for piece in stats), sum(piece["errors"] for piece in stats)
    line = f"hf-indosent predict: wrote {layout.output} ({rows:,} rows"
    if errors:
        first, reason = min(error for piece in stats for error in piece["first_errors"])
        line += f"; {errors:,} could not be classified, the first at row {first}: {reason}; their label is blank"
    print(line + ")", file=sys.stderr)
    runs = [json.loads(layout.process(index).read_text(encoding="utf-8")) for index in range(processes)]
    predicted = sum(run["rows"] for run in runs)
    overall = f"{predicted / seconds:,.0f} rows/s overall"
    print(f"  {predicted:,} rows predicted in {seconds:.1f} s: {overall}", file=sys.stderr)
    for index, run in enumerate(runs):
        rate = run["rows"] / run["seconds"] if run["seconds"] else 0.0
        print(f"  process {index} ({run['device']}): {run['rows']:,} rows, {rate:,.0f} rows/s", file=sys.stderr)
    if predicted < rows:
        print(f"  {rows - predicted:,} rows were committed by an earlier run (resumed)", file=sys.stderr)
    return {"rows": rows, "errors": errors}
