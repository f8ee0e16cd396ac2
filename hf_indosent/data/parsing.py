"""Reading the user's data files: refusing what is not text (binary, compressed, another format) and parsing TSV/CSV
rows into examples, each bad row named."""

from __future__ import annotations

import csv
import io
import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hf_indosent.core.files import path_problem
from hf_indosent.core.suggest import closest

_BOM = "\ufeff"


LABEL_NAMES: tuple[str, ...] = ("positive", "neutral", "negative")
"""SmSA labels in IndoNLU index order (positive=0, neutral=1, negative=2)."""


NO_LABEL = -1
"""Label id of rows whose label is unknown (the masked test split)."""


class DataFormatError(ValueError):
    """A data file that cannot be read without guessing. The message names file, line, value and the fix."""

    def __init__(self, path: str | os.PathLike, line: int | None, problem: str, fix: str) -> None:
        where = f"{path}, line {line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}. {fix}")
        self.path = str(path)
        self.line = line
        self.problem = problem
        self.fix = fix


SNIFF_BYTES = 8192
"""How much of a file is looked at to tell text from a compressed or binary file."""


BINARY_SHARE = 0.3
"""A file whose first :data:`SNIFF_BYTES` are this share or more of control characters or bytes that are not UTF-8
is not text (random or compressed bytes: about 55%; UTF-16 without a byte-order mark: 50%; text with a stray NUL or a
Latin-1 letter: a few percent, and read row by row)."""


ENCODING_MARKS: dict[bytes, str] = {
    b"\xff\xfe\x00\x00": "UTF-32",
    b"\x00\x00\xfe\xff": "UTF-32",
    b"\xff\xfe": "UTF-16",
    b"\xfe\xff": "UTF-16",
}
"""Byte-order marks of text in another encoding than UTF-8, longest first."""


COMPRESSED: dict[bytes, str] = {
    b"\x1f\x8b": "gzip-compressed (decompress it first: gunzip -k)",
    b"PK\x03\x04": "a zip archive (unzip it first and pass the text file inside)",
    b"PK\x05\x06": "an empty zip archive (unzip it first and pass the text file inside)",
    b"\xfd7zXZ\x00": "xz-compressed (decompress it first: unxz -k)",
    b"\x28\xb5\x2f\xfd": "zstd-compressed (decompress it first: unzstd)",
    b"7z\xbc\xaf\x27\x1c": "a 7-Zip archive (extract it first and pass the text file inside)",
}
"""Magic bytes of compressed files: the file is refused with how to decompress it, whatever its name ends in."""


BINARY_FORMATS: dict[bytes, str] = {
    b"\x89PNG\r\n\x1a\n": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF87a": "a GIF image",
    b"GIF89a": "a GIF image",
    b"%PDF-": "a PDF document",
    b"SQLite format 3\x00": "an SQLite database",
}


def check_input_file(path: str | os.PathLike, *, text: bool = True) -> None:
    """Refuse, as a whole and naming it, an input file that cannot be read: one that is not there, a folder, a
    symbolic-link loop, and (``text``) a file that is not UTF-8 text at all: compressed (say how to decompress it),
    an image or another binary format, or text in UTF-16/32. Told by the bytes, not the name. Every command that
    reads a file of texts (predict, predict at scale, evaluate, the demo's upload) opens it after this check, so
    such a file never turns into rows of errors, or one blank row."""
    problem = _path_problem(path)
    if problem is None and text and stat.S_ISREG(os.stat(path).st_mode):
        with open(path, "rb") as handle:
            problem = _content_problem(handle.read(SNIFF_BYTES))
    if problem is not None:
        raise DataFormatError(path, *problem)


def _path_problem(path: str | os.PathLike) -> tuple[int | None, str, str] | None:
    """``(line, problem, fix)`` for a path that is not a readable file (see
    :func:`hf_indosent.core.files.path_problem`)."""
    problem = path_problem(path)
    return None if problem is None else (None, *problem)


def _content_problem(head: bytes) -> tuple[int | None, str, str] | None:
    """``(line, problem, fix)`` when ``head``, a file's first bytes, shows that the file is not UTF-8 text."""
    for mark, encoding in ENCODING_MARKS.items():
        if head.startswith(mark):
            return (
                1,
                f"is {encoding} text (it starts with a {encoding} byte-order mark), not valid UTF-8",
                f"Re-save it as UTF-8 (e.g. `iconv -f {encoding.lower()} -t utf-8 in.txt > out.txt`)",
            )
    for magic, kind in COMPRESSED.items():
        if head.startswith(magic):
            return None, f"looks like a binary file: it is {kind}", "Pass the uncompressed UTF-8 text file"
    for magic, kind in BINARY_FORMATS.items():
        if head.startswith(magic):
            return None, f"looks like a binary file ({kind}), not text", "Pass a UTF-8 text file"
    share = _binary_share(head)
    if share >= BINARY_SHARE:
        return (
            None,
            f"looks like a binary file, not UTF-8 text ({share:.0%} of its first {len(head):,} bytes are control "
            "characters or not UTF-8)",
            "Pass a UTF-8 text file (re-save text in another encoding as UTF-8; decompress a compressed one)",
        )
    return None


def _binary_share(head: bytes) -> float:
    """The share of characters in ``head`` that text does not hold: C0 controls but whitespace, and bytes that are
    not UTF-8 (each decoded as U+FFFD)."""
    decoded = head.decode("utf-8", "replace")
    if not decoded:
        return 0.0
    odd = sum(char == "\ufffd" or (char < " " and char not in "\t\n\v\f\r\b\x1b") for char in decoded)
    return odd / len(decoded)


@dataclass(frozen=True)
class SplitSource:
    """One file feeding one split, and how to read it."""

    path: str
    labelled: bool | None = True  # None: labelled if the header has the label column (user test files)
    header: bool = False
    text_column: str = "text"
    label_column: str = "label"

    @property
    def delimiter(self) -> str:
        return "," if Path(self.path).suffix.lower() == ".csv" else "\t"


def _label_fix(value: str, label_names: Sequence[str], renamable: bool = True) -> str:
    expected = ", ".join(repr(name) for name in label_names)
    near = closest(value.strip(), label_names)
    if near is not None:
        return f"Labels are matched exactly (case and spaces count): did you mean {near!r}? Expected one of {expected}"
    if not renamable:
        return f"Expected one of {expected} (this file's labels are fixed by its task)"
    return f"Expected one of {expected}; if your data uses other label names, pass label_names=[...]"


def _decode(path: str, raw: bytes) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        bad = raw[err.start : err.end + 8]
        raise DataFormatError(
            path,
            line,
            f"bytes {bad!r} are not valid UTF-8",
            "Re-save the file as UTF-8 (for example `iconv -f latin1 -t utf-8 in.tsv > out.tsv`)",
        ) from None
    return text[1:] if text.startswith(_BOM) else text


def _tsv_rows(path: str, text: str) -> Iterator[tuple[int, list[str]]]:
    """Split on tabs with no quoting at all, so quotes inside texts stay verbatim."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline terminates the last row; it does not start a new one
    for number, line in enumerate(lines, start=1):
        yield number, line.removesuffix("\r").split("\t")


def _csv_rows(path: str, text: str) -> Iterator[tuple[int, list[str]]]:
    """RFC 4180 CSV: quoted fields may hold commas, quotes and newlines."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    start = 1
    try:
        for row in reader:
            yield start, row
            start = reader.line_num + 1
    except csv.Error as err:
        raise DataFormatError(
            path, reader.line_num, f"malformed CSV ({err})", "Quote fields that contain commas, quotes or newlines"
        ) from None


def read_examples(source: SplitSource, label_names: Sequence[str] = LABEL_NAMES) -> Iterator[tuple[int, str, int]]:
    """Yield ``(line_number, text, label_id)`` for every row of ``source``; raise on the first bad row."""
    for number, text, labels in read_rows(source, {source.label_column: label_names}):
        yield number, text, labels[source.label_column]


def read_rows(
    source: SplitSource,
    labels: Mapping[str, Sequence[str]],
    *,
    exact_columns: Sequence[str] | None = None,
) -> Iterator[tuple[int, str, dict[str, int]]]:
    """Yield ``(line_number, text, {label column: label id})`` for every row of ``source``; raise on the first bad row.

    ``labels`` maps each label column to its label names in id order; a headerless file holds the text, then these
    columns in this order. Rows of an unlabelled source get :data:`NO_LABEL` in every label column. With
    ``exact_columns`` (a task's own file, e.g. IndoNLU's CSV), the header must name exactly these columns (in any
    order; values are read by name) and label names cannot be renamed; without it, a header needs the text and label
    columns and may hold others, which are ignored."""
    path = source.path
    check_input_file(path)
    with open(path, "rb") as handle:
        text = _decode(path, handle.read())
    if not text.strip():
        layout = "text<TAB>label" if exact_columns is None else f"the header {','.join(exact_columns)}, then rows"
        raise DataFormatError(path, None, "file is empty", f"Expected one example per line: {layout}")

    columns = list(labels)
    to_id = {column: {name: index for index, name in enumerate(names)} for column, names in labels.items()}
    rows = _csv_rows(path, text) if source.delimiter == "," else _tsv_rows(path, text)
    text_index, label_index, width = 0, {column: 1 + index for index, column in enumerate(columns)}, 1 + len(columns)
    labelled = source.labelled
    if source.header:
        _, header = next(rows)
        if len(set(header)) != len(header):
            raise DataFormatError(path, 1, f"duplicate column names in header {header}", "Rename the columns")
        if exact_columns is not None and set(header) != set(exact_columns):
            raise DataFormatError(path, 1, *_header_mismatch(header, exact_columns))
        if source.text_column not in header:
            raise DataFormatError(
                path, 1, f"header {header} has no text column {source.text_column!r}", "Set text_column"
            )
        text_index = header.index(source.text_column)
        missing = [column for column in columns if column not in header]
        if not missing:
            label_index = {column: header.index(column) for column in columns}
            labelled = labelled is not False
        elif labelled or len(missing) < len(columns):
            raise DataFormatError(path, 1, f"header {header} has no label column {missing[0]!r}", "Set label_column")
        width = len(header)

    if source.header:
        layout = "the header's columns"
    else:
        layout = "<TAB>".join(["text", *(["label"] if len(columns) == 1 else columns)])
    separator = "a tab" if source.delimiter == "\t" else "a comma"
    unlabelled = dict.fromkeys(columns, NO_LABEL)
    count = 0
    for number, fields in rows:
        count += 1
        if len(fields) != width:
            if len(fields) > width and source.delimiter == "\t":
                fix = "TSV has no quoting, so a text cannot contain a tab: remove it (or use a quoted CSV file)"
            elif len(fields) > width:
                fix = "Quote a text that contains commas"
            else:
                fix = f"Every row needs all its columns: add the missing value (e.g. the label after {separator})"
            raise DataFormatError(
                path, number, f"expected {width} columns ({layout}), found {len(fields)}: {fields[:4]!r}", fix
            )
        value = fields[text_index]
        if not value.strip():
            raise DataFormatError(
                path, number, f"empty text {value!r}", "Every row needs a non-empty text; remove or fill it"
            )
        if not labelled:
            yield number, value, dict(unlabelled)
            continue
        ids = {}
        for column in columns:
            label = fields[label_index[column]]
            if label not in to_id[column]:
                where = f" in column {column!r}" if len(columns) > 1 else ""
                hint = " (this looks like a header row; SmSA files have none)" if number == 1 else ""
                fix = _label_fix(label, labels[column], renamable=exact_columns is None)
                raise DataFormatError(path, number, f"unknown label {label!r}{where}{hint}", fix)
            ids[column] = to_id[column][label]
        yield number, value, ids
    if count == 0:  # a header and nothing else: `datasets` would only say the split "corresponds to no data"
        raise DataFormatError(path, None, "has a header row but no examples", "Add at least one row below the header")


def _header_mismatch(header: Sequence[str], expected: Sequence[str]) -> tuple[str, str]:
    """``(problem, fix)`` for a header that does not name exactly ``expected``."""
    missing = [column for column in expected if column not in header]
    extra = [column for column in header if column not in expected]
    details = "; ".join(
        part for part in (f"missing {missing}" if missing else "", f"unexpected {extra}" if extra else "") if part
    )
    return (
        f"header {list(header)} does not match the expected columns ({details})",
        f"The first row must be the header {','.join(expected)} (the upstream file's); rename or remove the other "
        "columns",
    )
