"""Writing results: the streaming writer of predict's rows and the tables (csv, jsonl, parquet) of predict at scale."""

from __future__ import annotations

import csv
import io
import json
import os
import select
import shutil
import stat
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from hf_indosent.core.files import atomic_path
from hf_indosent.inference.inputs import MIB, shown_text
from hf_indosent.modeling.aspects import ASPECTS_KEY

RESERVED_COLUMNS = ("index", "text", "label", "score", "error")
"""Result columns of their own, which no aspect may be named."""
SCORE_SUFFIX = "_score"
"""``<aspect>_score``: the probability of the label predicted for that aspect."""


def reader_gone(handle: IO[str]) -> bool:
    """Whether ``handle`` is a pipe whose reader has closed it (``predict | head`` once head has its lines): Linux's
    ``poll`` reports POLLERR on the writing end then, before anything is written. Anything else (a file, a terminal,
    a test's capture, a system without ``poll``) is never taken for gone: a write there still fails with EPIPE."""
    try:
        fd = handle.fileno()
        if not stat.S_ISFIFO(os.fstat(fd).st_mode) or not hasattr(select, "poll"):
            return False
    except (AttributeError, OSError, ValueError):  # no file descriptor (io.UnsupportedOperation is both)
        return False
    poller = select.poll()
    poller.register(fd, 0)  # POLLERR and POLLHUP are reported whatever is asked for
    return any(events & select.POLLERR for _, events in poller.poll(0))


class ResultWriter:
    """Writes ``index, text, label, score per label, error`` rows as CSV or JSON Lines, one row at a time; for an
    aspect model, the flat rows of :func:`result_columns` (each aspect's label and score), as piece-wise tables hold."""

    def __init__(
        self, handle: IO[str], output_format: str, label_names: Sequence[str], aspects: Sequence[str] = ()
    ) -> None:
        self.handle = handle
        self.format = output_format
        self.label_names = list(label_names)
        self.aspect_columns = (
            result_columns(label_names, include_text=True, include_scores=True, aspects=aspects) if aspects else []
        )
        if output_format == "csv":
            self.csv = csv.writer(handle, lineterminator="\n")
            scores = [f"score_{name}" for name in self.label_names]
            self.csv.writerow(self.aspect_columns or ["index", "text", "label", *scores, "error"])

    def write(self, index: int, row: Any, result: dict[str, Any]) -> None:
        if self.aspect_columns:
            cells = {column: _cell(column, index, row, result) for column in self.aspect_columns}
            if self.format == "jsonl":
                self.handle.write(json.dumps(cells, ensure_ascii=False) + "\n")
            else:
                self.csv.writerow("" if value is None else value for value in cells.values())
            return
        text = shown_text(row)
        if self.format == "jsonl":
            self.handle.write(json.dumps({"index": index, "text": text, **result}, ensure_ascii=False) + "\n")
            return
        scores = result["scores"] or {}
        self.csv.writerow(
            [index, text, result["label"], *[scores.get(name, "") for name in self.label_names], result["error"] or ""]
        )


def is_score_column(column: str) -> bool:
    """Whether a result column holds probabilities: ``score``, ``score_<label>`` or ``<aspect>_score``."""
    return column == "score" or column.startswith("score_") or column.endswith(SCORE_SUFFIX)


def result_columns(
    label_names: Sequence[str], *, include_text: bool, include_scores: bool, aspects: Sequence[str] = ()
) -> list[str]:
    """Columns of a result table: ``index``, [``text``], then ``label``, ``score`` (the top one), [``score_<label>``...]
    or, for an aspect model, each aspect's label under its name [and ``<aspect>_score``, that label's probability];
    then ``error``."""
    texts = ["text"] if include_text else []
    if not aspects:
        scores = [f"score_{name}" for name in label_names] if include_scores else []
        return ["index", *texts, "label", "score", *scores, "error"]
    clashes = [aspect for aspect in aspects if aspect in RESERVED_COLUMNS or is_score_column(aspect)]
    if clashes:
        raise ValueError(
            f"the model's aspects {clashes} would be taken for predict's own columns ({', '.join(RESERVED_COLUMNS)}, "
            f"score_*, *{SCORE_SUFFIX}): rename them in its config.json {ASPECTS_KEY!r}"
        )
    answers: list[str] = []
    for aspect in aspects:
        answers += [aspect, aspect + SCORE_SUFFIX] if include_scores else [aspect]
    return ["index", *texts, *answers, "error"]


def _cell(column: str, index: int, row: Any, result: Mapping[str, Any]) -> Any:
    if column == "index":
        return index
    if column == "text":
        return shown_text(row)
    if column in ("label", "error"):
        return result[column]
    scores = result.get("scores")
    if column == "score":
        return max(scores.values()) if scores else None
    if column.startswith("score_"):
        return scores[column.removeprefix("score_")] if scores else None
    return _aspect_cell(column, result.get("aspects"))


def _aspect_cell(column: str, aspects: Mapping[str, Any] | None) -> Any:
    """An aspect's label, or (``<aspect>_score``) that label's probability; nothing for an error row."""
    if aspects is None:
        return None
    if column.endswith(SCORE_SUFFIX):
        answer = aspects[column.removesuffix(SCORE_SUFFIX)]
        return answer["scores"][answer["label"]]
    return aspects[column]["label"]


def result_table(
    columns: Sequence[str], start: int, rows: Sequence[Any], results: Iterable[Mapping[str, Any]]
) -> dict[str, list[Any]]:
    """Column name -> values for ``rows`` (the first is input row ``start``) and their predictor results."""
    table: dict[str, list[Any]] = {column: [] for column in columns}
    for index, (row, result) in enumerate(zip(rows, results, strict=True), start=start):
        for column in columns:
            table[column].append(_cell(column, index, row, result))
    return table


def _arrow_schema(columns: Sequence[str]) -> pa.Schema:
    def kind(column: str) -> pa.DataType:
        return pa.int64() if column == "index" else pa.float64() if is_score_column(column) else pa.string()

    return pa.schema([(column, kind(column)) for column in columns])


def write_table(path: Path, table: Mapping[str, list[Any]], output_format: str, *, header: bool = False) -> None:
    """``table`` as CSV (header row only if asked, empty cells for None), JSON Lines or Parquet at ``path``."""
    if output_format == "parquet":
        pq.write_table(pa.Table.from_pydict(dict(table), schema=_arrow_schema(list(table))), path)
        return
    buffer = io.StringIO()
    columns = list(table)
    rows = zip(*table.values(), strict=True)
    if output_format == "csv":
        writer = csv.writer(buffer, lineterminator="\n")
        if header:
            writer.writerow(columns)
        writer.writerows(["" if value is None else value for value in values] for values in rows)
    else:
        for values in rows:
            buffer.write(json.dumps(dict(zip(columns, values, strict=True)), ensure_ascii=False) + "\n")
    path.write_bytes(buffer.getvalue().encode("utf-8"))


def concatenate_tables(parts: Iterable[Path], output: Path, output_format: str, columns: Sequence[str]) -> None:
    """One ``output`` file from pieces written by :func:`write_table`, in the given order, atomically."""
    with atomic_path(output) as temp:
        if output_format == "parquet":
            with pq.ParquetWriter(temp, _arrow_schema(columns)) as writer:
                for part in parts:
                    writer.write_table(pq.read_table(part))
            return
        write_table(temp, {column: [] for column in columns}, output_format, header=True)
        with open(temp, "ab") as handle:
            for part in parts:
                with open(part, "rb") as source:
                    shutil.copyfileobj(source, handle, MIB)
