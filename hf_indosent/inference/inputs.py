"""Text in and out for ``predict``: every input kind, streamed, and every output format, written atomically.

Inputs are read lazily, a line, a CSV record or an Arrow batch at a time, so a file of any size costs the memory of
one batch: text files (one text per line), a TSV or CSV column, a JSON Lines field, a Parquet column, and a `datasets`
dataset (a ``save_to_disk`` folder, or a Hub dataset streamed). A row that cannot be used keeps its place as a
:class:`BadInput`, and a text that is not valid Unicode (a lone surrogate: a JSON ``"\\ud83d"``, a byte that is not
UTF-8 in a CSV or Parquet value or on the command line) is named by :func:`text_problem`, the check every predictor
makes of every row. A file that cannot be read without guessing, or is not text at all, raises
:class:`~hf_indosent.data.parsing.DataFormatError` naming the file, the row and the fix.

Outputs: :class:`ResultWriter` (one row at a time, CSV or JSON Lines) and result tables (CSV, JSON Lines or Parquet)
written in pieces and concatenated. Files are written to a temporary name beside their destination and renamed into
place (:func:`atomic_path`), so a reader sees the old file or the whole new one, never half of one.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

import datasets
import pyarrow as pa
import pyarrow.parquet as pq

from hf_indosent.core.files import file_fingerprint
from hf_indosent.data.parsing import DataFormatError, check_input_file

MIB = 1 << 20
ARROW_BATCH_ROWS = 4096
"""Rows converted from Arrow to Python at a time (Parquet row groups, dataset batches)."""


@dataclass(frozen=True)
class BadInput:
    """An input row that cannot be classified (e.g. a line that is not UTF-8); its output row carries ``reason``."""

    reason: str


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot go to a tokenizer (nor be written as UTF-8), or ``None``: a lone surrogate, which Python
    strings can hold (JSON's ``"\\ud83d"``; a byte that is not UTF-8, kept by ``surrogateescape`` from the command
    line, a CSV or a Parquet value) but Unicode text cannot. Named with its position, so the row keeps its place."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:  # UTF-8 encodes every code point but the surrogates
        char = text[err.start]
        if _escaped_byte(char):
            return f"text is not valid UTF-8: byte {_escaped(char)} at character {err.start}"
        return f"text is not valid Unicode: lone surrogate {_escaped(char)} at character {err.start}"
    return None


def shown_text(row: Any) -> str | None:
    """An input row as the output's ``text`` cell: ``None`` for what is not a text, and every lone surrogate written
    as the escape :func:`text_problem` names, so the row can be written (UTF-8, Arrow) and matched to its error."""
    if not isinstance(row, str):
        return None
    if text_problem(row) is None:
        return row
    return "".join(_escaped(char) if "\ud800" <= char <= "\udfff" else char for char in row)


def _escaped_byte(char: str) -> bool:
    return "\udc80" <= char <= "\udcff"  # surrogateescape's stand-ins for the bytes 0x80-0xff


def _escaped(char: str) -> str:
    code = ord(char)
    return f"\\x{code - 0xDC00:02x}" if _escaped_byte(char) else f"\\u{code:04x}"


# --------------------------------------------------------------------------------------------------------------
# Readers


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


def read_file_lines(path: str) -> Iterator[str | BadInput]:
    with open(path, "rb") as handle:
        yield from read_lines(handle)


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
    # A byte that is not UTF-8 is kept as a lone surrogate: its row gets the error (text_problem), the rest go on.
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
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
        except csv.Error as err:
            # A CSV cannot be resynchronised after a broken quote, so the whole file is refused.
            raise DataFormatError(path, reader.line_num, f"cannot be read as CSV ({err})", "Fix the quoting") from None


def _column_index(path: str, names: list[str], text_column: str) -> int:
    if text_column not in names:
        raise DataFormatError(path, 1, f"header {names} has no column {text_column!r}", "Set --text_column")
    return names.index(text_column)


def _pick(fields: list[str], line: int, index: int, width: int) -> str | BadInput:
    if len(fields) != width:
        return BadInput(f"line {line} has {len(fields)} columns, the header has {width}")
    return fields[index]


def read_jsonl(path: str, field: str) -> Iterator[Any]:
    """``field`` of each JSON Lines record. The first record must have it (like a header); later lines that are
    empty, not JSON objects or without the field keep their row as a BadInput."""
    checked = False
    for number, line in enumerate(read_file_lines(path), start=1):
        record = _json_record(line, number)
        if isinstance(record, BadInput):
            yield record
        elif field in record:
            checked = True
            yield record[field]
        elif not checked:
            raise DataFormatError(
                path, number, f"the first record has no field {field!r} (fields: {sorted(record)})", "Set --text_column"
            )
        else:
            yield BadInput(f"line {number} has no field {field!r}")


def _json_record(line: str | BadInput, number: int) -> dict[str, Any] | BadInput:
    if isinstance(line, BadInput):
        return line
    if not line.strip():
        return BadInput(f"line {number} is empty")
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        return BadInput(f"line {number} is not valid JSON ({err.msg} at column {err.colno})")
    return record if isinstance(record, dict) else BadInput(f"line {number} is not a JSON object")


def _parquet_file(path: str, column: str) -> pq.ParquetFile:
    try:
        parquet = pq.ParquetFile(path)
    except pa.ArrowException as err:
        raise DataFormatError(
            path, None, f"cannot be read as Parquet ({err})", "Write it with pyarrow or pandas' to_parquet"
        ) from None
    names = parquet.schema_arrow.names
    if column not in names:
        raise DataFormatError(path, None, f"has no column {column!r} (columns: {names})", "Set --text_column")
    return parquet


def read_parquet(path: str, column: str) -> Iterator[Any]:
    """``column`` of a Parquet file, one Arrow batch at a time (only that column is read from disk)."""
    for batch in _parquet_file(path, column).iter_batches(batch_size=ARROW_BATCH_ROWS, columns=[column]):
        yield from arrow_values(batch.column(0))


def read_dataset(dataset: datasets.Dataset | datasets.IterableDataset, column: str) -> Iterator[Any]:
    """``column`` of a `datasets` dataset, a batch at a time (memory-mapped, or streamed from the Hub)."""
    for batch in dataset.select_columns([column]).with_format("arrow").iter(batch_size=ARROW_BATCH_ROWS):
        yield from arrow_values(batch.column(0))


def arrow_values(column: pa.Array | pa.ChunkedArray) -> list[Any]:
    """The Python values of an Arrow column. Arrow does not check the UTF-8 of the strings a writer put in a Parquet
    or Arrow file, and one bad string fails the conversion of its whole batch: then the strings are decoded one by
    one, each byte that is not UTF-8 kept as a lone surrogate that :func:`text_problem` names on its own row."""
    try:
        return column.to_pylist()
    except UnicodeDecodeError:
        raw = column.cast(pa.large_binary()).to_pylist()  # the same bytes, unchecked
    return [value.decode("utf-8", "surrogateescape") if value is not None else None for value in raw]


def count_lines(path: str) -> int:
    """Lines in a text file (a last line without a newline counts), read in 1 MiB blocks: about a second per GB."""
    lines, last = 0, b"\n"
    with open(path, "rb") as handle:
        while block := handle.read(MIB):
            lines += block.count(b"\n")
            last = block[-1:]
    return lines + (last != b"\n")


# --------------------------------------------------------------------------------------------------------------
# Input sources: what every process of a sharded run opens, reads from the start and fingerprints


@dataclass(frozen=True)
class InputSource:
    """A re-readable input: ``rows()`` streams it from its first row, every time it is called.

    ``count()`` gives the number of rows when that is cheap (for the progress bar's ETA), else None;
    ``fingerprint()`` identifies the content, so a resumed run can tell that its input has not changed.
    """

    name: str
    rows: Callable[[], Iterator[Any]]
    count: Callable[[], int | None]
    fingerprint: Callable[[], dict[str, Any]]


def open_input(
    file: str | None = None, text_column: str | None = None, *, dataset: str | None = None, split: str | None = None
) -> InputSource:
    """The source for ``--file`` (kind by extension: .jsonl, .parquet, .csv/.tsv with ``text_column``, else lines)
    or ``--dataset`` (a ``save_to_disk`` folder, or a Hub id streamed). Structured inputs default to column "text"."""
    if dataset is not None:
        return _dataset_source(dataset, text_column or "text", split)
    if file is None:
        raise ValueError("no input: pass --file or --dataset")
    suffix = Path(file).suffix.lower()
    check_input_file(file, text=suffix != ".parquet")
    count: Callable[[], int | None] = partial(count_lines, file)
    if suffix == ".jsonl":
        rows = partial(read_jsonl, file, text_column or "text")
    elif suffix == ".parquet":
        column = text_column or "text"
        rows, count = partial(read_parquet, file, column), lambda: _parquet_file(file, column).metadata.num_rows
    elif text_column is not None:
        rows = partial(read_column, file, text_column)
        count = (lambda: None) if suffix == ".csv" else lambda: max(count_lines(file) - 1, 0)
    else:
        rows = partial(read_file_lines, file)
    return InputSource(file, rows, count, lambda: {"path": str(Path(file).resolve()), **file_fingerprint(file)})


def _dataset_source(name: str, column: str, split: str | None) -> InputSource:
    if Path(name).is_dir():
        dataset = _one_split(name, datasets.load_from_disk(name), split)
        identity = {"path": str(Path(name).resolve()), "split": split, "fingerprint": dataset._fingerprint}
    else:
        if split is None:
            raise ValueError(f"--dataset {name!r} is not a local folder, so it is read from the Hub: pass --split")
        dataset = datasets.load_dataset(name, split=split, streaming=True)
        identity = {"hub_dataset": name, "split": split}
    if dataset.column_names is not None and column not in dataset.column_names:
        raise DataFormatError(
            name, None, f"has no column {column!r} (columns: {dataset.column_names})", "Set --text_column"
        )
    return InputSource(name, partial(read_dataset, dataset, column), lambda: _num_rows(dataset), lambda: identity)


def _one_split(name: str, loaded: datasets.Dataset | datasets.DatasetDict, split: str | None) -> datasets.Dataset:
    if isinstance(loaded, datasets.Dataset):
        return loaded
    if split not in loaded:
        raise DataFormatError(name, None, f"holds the splits {list(loaded)}", "Pick one with --split")
    return loaded[split]


def _num_rows(dataset: datasets.Dataset | datasets.IterableDataset) -> int | None:
    if isinstance(dataset, datasets.Dataset):
        return dataset.num_rows
    split = (dataset.info.splits or {}).get(str(dataset.split))
    return split.num_examples if split is not None else None


# --------------------------------------------------------------------------------------------------------------
# Writers
