"""Predict sentiment with a saved model: a Python API for notebooks and the ``hf-indosent predict`` command.

The model is loaded as ``transformers.pipeline("text-classification", truncation=True, top_k=None)`` and every text is
truncated at an explicit max length, so texts longer than the model accepts never crash. Speed comes from how the
pipeline is fed: input is read in chunks (memory stays bounded on huge files), each chunk is sorted by token length
and cut into batches of similar lengths (little padding), and the input order is restored before anything is returned.

Bad input never shifts rows. Empty or whitespace-only texts, non-strings and undecodable lines get an output row with
no label and an ``error`` that says why; row i of the output always belongs to row i of the input.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import logging
import sys
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

import torch
from transformers import pipeline

from hf_indosent.arguments import (
    CPU_BATCH_TOKENS,
    GPU_BATCH_TOKENS,
    InferenceArguments,
    PredictArguments,
    check_batching,
)
from hf_indosent.data import LABEL_NAMES, DataFormatError, load_smsa
from hf_indosent.modeling import label_names_of, max_positions, resolve_model_source

logger = logging.getLogger(__name__)

SUBMISSION_MEMBER = "pred.txt"
"""File name the IndoNLU CodaLab portal expects inside the submission zip."""

# Tokenizers without a declared limit report a huge sentinel (int(1e30)) as model_max_length.
_NO_LIMIT = 1_000_000


@dataclass(frozen=True)
class BadInput:
    """An input row that cannot be classified (e.g. a line that is not UTF-8); its output row carries ``reason``."""

    reason: str


def resolve_device(device: str | int | None) -> torch.device:
    """``None`` picks the GPU when one is visible, else the CPU; an explicit CUDA device must exist."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(f"cuda:{device}" if isinstance(device, int) else device)
    except RuntimeError:
        raise ValueError(f"device={device!r} is not a torch device: use 'cpu', 'cuda' or 'cuda:N'") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but no CUDA GPU is visible: use device='cpu' or leave it unset")
    return resolved


class Predictor:
    """A loaded text-classification pipeline and the length-sorted, chunked batching that feeds it.

    The pipeline's own stages do the work (its tokenizer with ``truncation=True`` and an explicit ``max_length``,
    ``pipe.forward`` for device placement, ``pipe.postprocess`` for the scores), so results are the pipeline's; only
    the batching differs. Within a chunk, texts are sorted by token length and cut into batches of at most
    ``batch_size`` texts and ``max_batch_tokens`` padded tokens: short texts share large batches, long ones small
    ones, and hardly any padding is computed.

    Load once, call often (``predictor(texts)`` or ``predictor.stream(rows)``); :func:`predict` does both in one go.
    """

    def __init__(
        self,
        model: str | Path,
        *,
        batch_size: int = 256,
        max_batch_tokens: int | None = None,
        device: str | int | None = None,
        max_length: int | None = None,
        chunk_size: int = 2048,
        revision: str | None = None,
    ) -> None:
        check_batching(batch_size, max_batch_tokens, chunk_size)
        self.model_path = resolve_model_source(model)
        self.label_names = label_names_of(self.model_path, revision)
        self.batch_size = batch_size
        self.chunk_size = chunk_size
        resolved = resolve_device(device)
        self.pipe = pipeline(
            "text-classification",
            model=self.model_path,
            revision=revision,
            device=resolved,
            truncation=True,
            top_k=None,
        )
        self.max_length = self._max_length(max_length)
        if max_batch_tokens is None:
            max_batch_tokens = CPU_BATCH_TOKENS if resolved.type == "cpu" else GPU_BATCH_TOKENS
        self.max_batch_tokens = max_batch_tokens

    @classmethod
    def from_arguments(cls, args: InferenceArguments) -> Predictor:
        """The predictor ``hf-indosent predict`` / ``evaluate`` build from their command-line options."""
        return cls(
            args.model,
            batch_size=args.batch_size,
            max_batch_tokens=args.max_batch_tokens,
            device=args.device,
            max_length=args.max_length,
            chunk_size=args.chunk_size,
            revision=args.revision,
        )

    def _max_length(self, requested: int | None) -> int:
        """The explicit truncation length: the smallest limit the tokenizer and the position embeddings declare."""
        limits = [max_positions(self.pipe.model), self.pipe.tokenizer.model_max_length]
        known = [limit for limit in limits if limit is not None and limit < _NO_LIMIT]
        model_limit = min(known) if known else None
        if requested is None:
            if model_limit is None:
                raise ValueError(f"model {self.model_path!r} declares no maximum input length: pass max_length")
            return model_limit
        if requested < 2 or (model_limit is not None and requested > model_limit):
            raise ValueError(
                f"max_length={requested} is out of range: use 2..{model_limit} (the model's limit), or leave it unset"
            )
        return requested

    @property
    def device(self) -> torch.device:
        return self.pipe.device

    def __call__(self, texts: str | Iterable[Any]) -> list[dict[str, Any]]:
        """One result per input: ``{"label", "scores": {name: probability}, "error"}`` (see module docstring)."""
        return list(self.stream([texts] if isinstance(texts, str) else texts))

    def stream(self, rows: Iterable[Any]) -> Iterator[dict[str, Any]]:
        """Lazily yield one result per input row, in input order, holding at most ``chunk_size`` rows at a time."""
        iterator = iter(rows)
        while chunk := list(itertools.islice(iterator, self.chunk_size)):
            yield from self._predict_chunk(chunk)

    def _batches(self, lengths: Sequence[int]) -> Iterator[list[int]]:
        """Indices of ``lengths`` shortest first, cut so no batch exceeds the text or padded-token limits."""
        batch: list[int] = []
        for index in sorted(range(len(lengths)), key=lengths.__getitem__):
            # Sorted ascending, so the newest text is the longest: the padded size is count x its length.
            if batch and (len(batch) == self.batch_size or (len(batch) + 1) * lengths[index] > self.max_batch_tokens):
                yield batch
                batch = []
            batch.append(index)
        if batch:
            yield batch

    def _predict_chunk(self, chunk: Sequence[Any]) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = [{}] * len(chunk)
        positions, texts = [], []
        for position, row in enumerate(chunk):
            reason = input_error(row)
            if reason is None:
                positions.append(position)
                texts.append(row)
            else:
                results[position] = {"label": None, "scores": None, "error": reason}
        if not texts:
            return results
        tokenizer = self.pipe.tokenizer
        lengths = tokenizer(texts, truncation=True, max_length=self.max_length, return_length=True)["length"]
        for batch in self._batches(lengths):
            inputs = tokenizer(
                [texts[index] for index in batch],
                truncation=True,
                max_length=self.max_length,
                padding=True,
                return_tensors="pt",
            )
            with torch.inference_mode():
                logits = self.pipe.forward(inputs)["logits"]
            for row, index in enumerate(batch):
                # top_k=None without sorting: one {"label", "score"} per label, in id order.
                scores = self.pipe.postprocess({"logits": logits[row : row + 1]}, top_k=None)
                best = max(scores, key=lambda item: item["score"])
                results[positions[index]] = {
                    "label": best["label"],
                    "scores": {item["label"]: item["score"] for item in scores},
                    "error": None,
                }
        return results


def input_error(row: Any) -> str | None:
    """Why ``row`` cannot be classified, or ``None`` when it is a usable text."""
    if isinstance(row, BadInput):
        return row.reason
    if not isinstance(row, str):
        return f"not a text: got {type(row).__name__}"
    if not row.strip():
        return "empty text"
    return None


def predict(
    texts: str | Iterable[Any],
    model: str | Path | Predictor,
    *,
    batch_size: int = 256,
    max_batch_tokens: int | None = None,
    device: str | int | None = None,
    max_length: int | None = None,
    revision: str | None = None,
) -> list[dict[str, Any]]:
    """Classify ``texts`` with a saved model (folder, run folder or Hub id) or an already loaded :class:`Predictor`.

    Returns one ``{"label": name, "scores": {name: probability, ...}, "error": None}`` per input, in input order.
    Inputs that are empty, whitespace-only or not strings get ``label=None`` and an ``error`` instead of a crash, so
    results always line up with inputs. A single string is treated as a list of one text.
    """
    if not isinstance(model, Predictor):
        model = Predictor(
            model,
            batch_size=batch_size,
            max_batch_tokens=max_batch_tokens,
            device=device,
            max_length=max_length,
            revision=revision,
        )
    return model(texts)


# --------------------------------------------------------------------------------------------------------------
# Reading input rows (streamed) and writing results


def read_lines(handle: BinaryIO) -> Iterator[str | BadInput]:
    """One text per line. A UTF-8 BOM and CRLF endings are tolerated; a line that is not UTF-8 becomes a BadInput."""
    for number, raw in enumerate(handle, start=1):
        line = raw.removesuffix(b"\n").removesuffix(b"\r")
        if number == 1:
            line = line.removeprefix(b"\xef\xbb\xbf")
        try:
            yield line.decode("utf-8")
        except UnicodeDecodeError as err:
            yield BadInput(f"line {number} is not valid UTF-8 ({err.reason} at byte {err.start})")


def read_column(path: str, text_column: str) -> Iterator[str | BadInput]:
    """The ``text_column`` of a TSV (tabs, no quoting, as SmSA) or CSV (RFC 4180) file with a header row."""
    if Path(path).suffix.lower() == ".csv":
        yield from _read_csv_column(path, text_column)
        return
    with open(path, "rb") as handle:
        lines = read_lines(handle)
        header = next(lines, None)
        if not isinstance(header, str):
            raise DataFormatError(path, 1, "no UTF-8 header row", "Start the file with a header naming the columns")
        names = header.split("\t")
        index = _column_index(path, names, text_column)
        for number, line in enumerate(lines, start=2):
            yield line if isinstance(line, BadInput) else _pick(line.split("\t"), number, index, len(names))


def _read_csv_column(path: str, text_column: str) -> Iterator[str | BadInput]:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, strict=True)
        try:
            names = next(reader, None)
            if names is None:
                raise DataFormatError(path, None, "file is empty", "Start the file with a header naming the columns")
            index = _column_index(path, names, text_column)
            start = reader.line_num + 1
            for fields in reader:
                yield _pick(fields, start, index, len(names))
                start = reader.line_num + 1
        except (UnicodeDecodeError, csv.Error) as err:
            # A CSV cannot be resynchronised after a broken quote or byte, so the whole file is refused.
            raise DataFormatError(
                path, reader.line_num, f"cannot be read as UTF-8 CSV ({err})", "Fix the quoting or re-save as UTF-8"
            ) from None


def _column_index(path: str, names: list[str], text_column: str) -> int:
    if text_column not in names:
        raise DataFormatError(path, 1, f"header {names} has no column {text_column!r}", "Set --text_column")
    return names.index(text_column)


def _pick(fields: list[str], line: int, index: int, width: int) -> str | BadInput:
    if len(fields) != width:
        return BadInput(f"line {line} has {len(fields)} columns, the header has {width}")
    return fields[index]


class ResultWriter:
    """Writes ``index, text, label, score per label, error`` rows as CSV or JSON Lines, one row at a time."""

    def __init__(self, handle: IO[str], output_format: str, label_names: Sequence[str]) -> None:
        self.handle = handle
        self.format = output_format
        self.label_names = list(label_names)
        if output_format == "csv":
            self.csv = csv.writer(handle, lineterminator="\n")
            self.csv.writerow(["index", "text", "label", *[f"score_{name}" for name in self.label_names], "error"])

    def write(self, index: int, row: Any, result: dict[str, Any]) -> None:
        text = row if isinstance(row, str) else None
        if self.format == "jsonl":
            self.handle.write(json.dumps({"index": index, "text": text, **result}, ensure_ascii=False) + "\n")
            return
        scores = result["scores"] or {}
        self.csv.writerow(
            [index, text, result["label"], *[scores.get(name, "") for name in self.label_names], result["error"] or ""]
        )


def write_submission(predictor: Predictor, texts: Iterable[str], path: str | Path) -> tuple[Path, Path]:
    """The IndoNLU CodaLab format: ``index,label`` in test-file order, plus the zip (holding ``pred.txt``) to upload."""
    if sorted(predictor.label_names) != sorted(LABEL_NAMES):
        raise ValueError(
            f"the IndoNLU submission needs SmSA's labels {list(LABEL_NAMES)}, but the model predicts "
            f"{predictor.label_names}: use a model fine-tuned on SmSA"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write("index,label\n")
        for index, result in enumerate(predictor.stream(texts)):
            handle.write(f"{index},{result['label']}\n")
    archive = path.with_suffix(".zip")
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        bundle.write(path, arcname=SUBMISSION_MEMBER)
    return path, archive


# --------------------------------------------------------------------------------------------------------------
# Command line


def _input_rows(args: PredictArguments) -> Iterator[str | BadInput]:
    if args.texts is not None:
        yield from args.texts
    elif args.file is not None and args.text_column is not None:
        yield from read_column(args.file, args.text_column)
    elif args.file is not None:
        with open(args.file, "rb") as handle:
            yield from read_lines(handle)
    else:
        yield from read_lines(sys.stdin.buffer)


def run_predict(inference: InferenceArguments, args: PredictArguments) -> dict[str, int]:
    """Run ``hf-indosent predict``; returns counts of rows written and rows with an error."""
    if args.submission is None and args.texts is None and args.file is None and sys.stdin.isatty():
        raise ValueError("no input: pass texts (--texts ...), --file, --submission, or pipe text on stdin")
    predictor = Predictor.from_arguments(inference)
    if args.submission is not None:
        test = load_smsa(data_dir=args.data_dir, cache_dir=args.dataset_cache_dir)["test"]
        path, archive = write_submission(predictor, test["text"], args.submission)
        logger.info("wrote %s (%d rows) and %s for the IndoNLU CodaLab portal", path, test.num_rows, archive)
        return {"rows": test.num_rows, "errors": 0}

    counts = {"rows": 0, "errors": 0}
    with contextlib.ExitStack() as stack:
        handle = (
            stack.enter_context(open(args.output, "w", encoding="utf-8", newline="")) if args.output else sys.stdout
        )
        writer = ResultWriter(handle, args.output_format, predictor.label_names)
        rows_a, rows_b = itertools.tee(_input_rows(args))
        for index, (row, result) in enumerate(zip(rows_a, predictor.stream(rows_b), strict=True)):
            writer.write(index, row, result)
            counts["rows"] += 1
            counts["errors"] += result["error"] is not None
    return counts


def cli_run(inference: InferenceArguments, args: PredictArguments) -> int:
    """``hf-indosent predict`` after argument parsing (errors are turned into one line by :mod:`hf_indosent.cli`)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    counts = run_predict(inference, args)
    if counts["errors"]:
        print(
            f"hf-indosent predict: {counts['errors']} of {counts['rows']} rows could not be classified (empty or "
            "unreadable text): their label is blank and the error column says why",
            file=sys.stderr,
        )
    return 0
