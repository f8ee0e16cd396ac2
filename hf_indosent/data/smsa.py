"""SmSA (IndoNLU document sentiment) as a `datasets` builder.

`datasets` no longer runs loading scripts, so the builder lives here as a `GeneratorBasedBuilder` subclass and is
driven directly by :func:`load_smsa`. Three sources are supported:

* the pinned upstream IndoNLU files (default; every download is checked against its sha256),
* a local folder with the upstream file names (``data_dir=``),
* the user's own TSV/CSV file per split (``data_files=``), optionally with their own label names.

Parsing is strict on purpose: a row is never dropped, merged or reinterpreted. Anything malformed raises
:class:`DataFormatError` naming the file, the line, the offending value and what was expected.
Tolerated deliberately: a UTF-8 byte-order mark at the start of a file, Windows (CRLF) line endings and one final
newline. Text is otherwise kept byte for byte (quotes, "null", "NA", surrounding spaces included).
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import datasets

from hf_indosent.core.files import path_problem
from hf_indosent.core.suggest import closest

logger = logging.getLogger(__name__)

LABEL_NAMES: tuple[str, ...] = ("positive", "neutral", "negative")
"""SmSA labels in IndoNLU index order (positive=0, neutral=1, negative=2)."""

NO_LABEL = -1
"""Label id of rows whose label is unknown (the masked test split)."""

SPLITS: tuple[str, ...] = ("train", "validation", "test")

UPSTREAM_COMMIT = "ce728f6926a36174b9923dfe49d6a6839b6e9bb7"
UPSTREAM_URL = "https://raw.githubusercontent.com/IndoNLP/indonlu/{commit}/dataset/smsa_doc-sentiment-prosa/{filename}"
UPSTREAM_FILES: dict[str, str] = {
    "train": "train_preprocess.tsv",
    "validation": "valid_preprocess.tsv",
    "test": "test_preprocess.tsv",
}
MASKED_TEST_FILE = "test_preprocess_masked_label.tsv"
SHA256: dict[str, str] = {
    "train_preprocess.tsv": "50f38ceed9b31521bf1581e126620532cc9b790712938159a2cdcf6906977a9b",
    "valid_preprocess.tsv": "6ab41ddc9d58a35086f05ebd2e209c74cb03d87d4f51d6abdfba674eafbefa74",
    "test_preprocess.tsv": "4e8016daa8e4e1b193f2a28a79d3a7804dd4e3f926a3ab7e8a64264f5f416a6f",
    MASKED_TEST_FILE: "ecc239ad7a069774954843da50eba266398bab70d0370f74684bf1c107b64e70",
}

_BOM = "\ufeff"
# Bump when parsing changes, so cached Arrow files built by an older parser are not reused.
_PARSER_VERSION = "1"


class DataFormatError(ValueError):
    """A data file that cannot be read without guessing. The message names file, line, value and the fix."""

    def __init__(self, path: str | os.PathLike, line: int | None, problem: str, fix: str) -> None:
        where = f"{path}, line {line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}. {fix}")
        self.path = str(path)
        self.line = line
        self.problem = problem
        self.fix = fix


class ChecksumError(RuntimeError):
    """A downloaded file whose sha256 differs from the pinned value."""


class DownloadError(RuntimeError):
    """The pinned upstream files could not be downloaded (no network, offline mode, server error)."""


class MissingLabelsError(ValueError):
    """A split without labels (e.g. the masked SmSA test set) was used where labels are required."""


# --------------------------------------------------------------------------------------------------------------
# Checksums


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: str | os.PathLike, expected: str, source: str | None = None) -> None:
    """Raise :class:`ChecksumError` unless ``path`` hashes to ``expected``."""
    actual = sha256_of(path)
    if actual != expected:
        raise ChecksumError(
            f"sha256 mismatch for {source or path}: expected {expected}, got {actual} (file: {path}). "
            "The upstream file changed or the download is corrupt; delete the cached download and retry, "
            "or pass data_dir= with a verified local copy."
        )


# --------------------------------------------------------------------------------------------------------------
# Input files: what cannot be read at all is refused as a whole, before any row is


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
    """``(line, problem, fix)`` for a path that is not a readable file (see :func:`hf_indosent.core.files.path_problem`)."""
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


# --------------------------------------------------------------------------------------------------------------
# File parsing


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


def _label_fix(value: str, label_names: Sequence[str]) -> str:
    expected = ", ".join(repr(name) for name in label_names)
    near = closest(value.strip(), label_names)
    if near is not None:
        return f"Labels are matched exactly (case and spaces count): did you mean {near!r}? Expected one of {expected}"
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
    path = source.path
    check_input_file(path)
    with open(path, "rb") as handle:
        text = _decode(path, handle.read())
    if not text.strip():
        raise DataFormatError(path, None, "file is empty", "Expected one example per line: text<TAB>label")

    label_to_id = {name: index for index, name in enumerate(label_names)}
    rows = _csv_rows(path, text) if source.delimiter == "," else _tsv_rows(path, text)
    text_index, label_index, width, labelled = 0, 1, 2, source.labelled
    if source.header:
        _, header = next(rows)
        if len(set(header)) != len(header):
            raise DataFormatError(path, 1, f"duplicate column names in header {header}", "Rename the columns")
        if source.text_column not in header:
            raise DataFormatError(
                path, 1, f"header {header} has no text column {source.text_column!r}", "Set text_column"
            )
        text_index = header.index(source.text_column)
        if source.label_column in header:
            label_index = header.index(source.label_column)
            labelled = labelled is not False
        elif labelled:
            raise DataFormatError(
                path, 1, f"header {header} has no label column {source.label_column!r}", "Set label_column"
            )
        width = len(header)

    layout = "the header's columns" if source.header else "text<TAB>label"
    count = 0
    for number, fields in rows:
        count += 1
        if len(fields) != width:
            if len(fields) > width and source.delimiter == "\t":
                fix = "TSV has no quoting, so a text cannot contain a tab: remove it (or use a quoted CSV file)"
            elif len(fields) > width:
                fix = "Quote a text that contains commas"
            else:
                fix = "Every row needs all its columns: add the missing value (e.g. the label after a tab)"
            raise DataFormatError(
                path, number, f"expected {width} columns ({layout}), found {len(fields)}: {fields[:4]!r}", fix
            )
        value = fields[text_index]
        if not value.strip():
            raise DataFormatError(
                path, number, f"empty text {value!r}", "Every row needs a non-empty text; remove or fill it"
            )
        if not labelled:
            yield number, value, NO_LABEL
            continue
        label = fields[label_index]
        if label not in label_to_id:
            hint = " (this looks like a header row; SmSA files have none)" if number == 1 else ""
            raise DataFormatError(path, number, f"unknown label {label!r}{hint}", _label_fix(label, label_names))
        yield number, value, label_to_id[label]
    if count == 0:  # a header and nothing else: `datasets` would only say the split "corresponds to no data"
        raise DataFormatError(path, None, "has a header row but no examples", "Add at least one row below the header")


# --------------------------------------------------------------------------------------------------------------
# The `datasets` builder


@dataclass
class SmsaConfig(datasets.BuilderConfig):
    """Builder config: ``sources`` maps split name to :class:`SplitSource`; ``None`` means upstream download."""

    sources: dict[str, SplitSource] | None = None
    label_names: tuple[str, ...] = field(default=LABEL_NAMES)


class Smsa(datasets.GeneratorBasedBuilder):
    """IndoNLU SmSA: Indonesian document-level sentiment (positive / neutral / negative)."""

    BUILDER_CONFIG_CLASS = SmsaConfig
    VERSION = datasets.Version("1.0.0")

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description="IndoNLU SmSA document-level sentiment analysis (Purwarianti & Crisdayanti, 2019).",
            features=datasets.Features(
                {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=list(self.config.label_names))}
            ),
            homepage="https://github.com/IndoNLP/indonlu",
            license="Apache-2.0 (IndoNLU repository)",
        )

    def _split_generators(self, dl_manager: datasets.DownloadManager) -> list[datasets.SplitGenerator]:
        sources = self.config.sources
        if sources is None:
            urls = {
                split: UPSTREAM_URL.format(commit=UPSTREAM_COMMIT, filename=name)
                for split, name in UPSTREAM_FILES.items()
            }
            try:
                paths = dl_manager.download(urls)
            except (OSError, ConnectionError) as err:  # offline mode, DNS, refused, HTTP 404: all say "no files"
                folder = UPSTREAM_URL.format(commit=UPSTREAM_COMMIT, filename="")
                raise DownloadError(
                    f"cannot download the SmSA files from {folder} ({type(err).__name__}); no network? Pass "
                    f"--data_dir (data_dir=) with a folder holding {', '.join(UPSTREAM_FILES.values())} "
                    "(e.g. ../shared/smsa), downloaded from that address"
                ) from None
            for split, name in UPSTREAM_FILES.items():
                verify_sha256(paths[split], SHA256[name], source=urls[split])
            sources = {split: SplitSource(path=str(paths[split])) for split in UPSTREAM_FILES}
        return [
            datasets.SplitGenerator(name=datasets.NamedSplit(split), gen_kwargs={"source": source})
            for split, source in sources.items()
        ]

    def _generate_examples(self, source: SplitSource) -> Iterator[tuple[int, dict]]:
        for number, text, label in read_examples(source, self.config.label_names):
            yield number, {"text": text, "label": label}


# --------------------------------------------------------------------------------------------------------------
# Public entry point


def _sources_from_dir(data_dir: str | os.PathLike) -> dict[str, SplitSource]:
    folder = Path(data_dir)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"data_dir {str(folder)!r} is not a directory. Point it at a folder with the IndoNLU SmSA files "
            f"({', '.join(UPSTREAM_FILES.values())}), e.g. ../shared/smsa, or omit it to download from upstream."
        )
    sources: dict[str, SplitSource] = {}
    for split in ("train", "validation"):
        path = folder / UPSTREAM_FILES[split]
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: data_dir must contain {UPSTREAM_FILES[split]}")
        sources[split] = SplitSource(path=str(path))
    if (folder / UPSTREAM_FILES["test"]).is_file():
        sources["test"] = SplitSource(path=str(folder / UPSTREAM_FILES["test"]))
    elif (folder / MASKED_TEST_FILE).is_file():
        # The masked file says "neutral" on every row as a placeholder: never treat that as a label.
        sources["test"] = SplitSource(path=str(folder / MASKED_TEST_FILE), labelled=False)
    return sources


def _sources_from_files(
    data_files: Mapping[str, str | os.PathLike], text_column: str, label_column: str, header: bool
) -> dict[str, SplitSource]:
    unknown = set(data_files) - set(SPLITS)
    if unknown:
        raise ValueError(f"data_files has unknown split(s) {sorted(unknown)}; use keys from {list(SPLITS)}")
    sources = {}
    for split, path in data_files.items():
        masked = Path(path).name == MASKED_TEST_FILE
        labelled = False if masked else (None if split == "test" and header else True)
        sources[split] = SplitSource(
            path=str(path),
            labelled=labelled,
            header=header and not masked,
            text_column=text_column,
            label_column=label_column,
        )
    return sources


def _fingerprint(sources: Mapping[str, SplitSource] | None, label_names: Sequence[str]) -> str:
    """Cache key that changes whenever a file's bytes, its reading options or the labels change."""
    digest = hashlib.sha256(f"parser={_PARSER_VERSION};labels={list(label_names)}".encode())
    if sources is None:
        digest.update(f"upstream={UPSTREAM_COMMIT}".encode())
    else:
        for split in sorted(sources):
            source = sources[split]
            content = sha256_of(source.path) if os.path.isfile(source.path) else "missing"
            digest.update(f"{split}={source!r};{content}".encode())
    return digest.hexdigest()[:16]


def load_smsa(
    data_dir: str | os.PathLike | None = None,
    data_files: Mapping[str, str | os.PathLike] | None = None,
    *,
    label_names: Sequence[str] | None = None,
    text_column: str = "text",
    label_column: str = "label",
    header: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> datasets.DatasetDict:
    """Load SmSA (or your own sentiment data) as a ``DatasetDict`` with ``text`` and a ``ClassLabel`` ``label``.

    Args:
        data_dir: folder with the IndoNLU file names (``train_preprocess.tsv``, ``valid_preprocess.tsv`` and
            ``test_preprocess.tsv`` or ``test_preprocess_masked_label.tsv``). Headerless ``text<TAB>label``.
        data_files: your own files per split, e.g. ``{"train": "a.tsv", "validation": "b.csv"}``. ``.csv`` is
            read as RFC 4180 CSV, anything else as TSV without quoting. A test file without a label column (or
            the masked SmSA test file) gets label -1.
        label_names: label names in id order when your data does not use SmSA's.
        header: whether ``data_files`` start with a header row naming ``text_column`` and ``label_column``.
        cache_dir: where the Arrow cache goes (default: the ``datasets`` cache).

    With neither ``data_dir`` nor ``data_files``, the pinned upstream files are downloaded and verified.
    """
    if data_dir is not None and data_files is not None:
        raise ValueError("Pass either data_dir= (IndoNLU file names) or data_files= (your own files), not both")
    names = tuple(label_names) if label_names is not None else LABEL_NAMES
    if len(set(names)) != len(names) or len(names) < 2:
        raise ValueError(f"label_names={list(names)} must hold at least two distinct names")
    if data_dir is not None:
        sources = _sources_from_dir(data_dir)
    elif data_files is not None:
        sources = _sources_from_files(data_files, text_column, label_column, header)
    else:
        sources = None
    builder = Smsa(
        cache_dir=str(cache_dir) if cache_dir is not None else None,
        dataset_name="smsa",
        config_id="default",
        hash=_fingerprint(sources, names),
        sources=sources,
        label_names=names,
    )
    try:
        builder.download_and_prepare()
    except datasets.exceptions.DatasetGenerationError as err:
        if isinstance(err.__cause__, (DataFormatError, DownloadError)):
            raise err.__cause__ from None  # the user needs our file/line message, not the wrapper
        raise
    return builder.as_dataset()


def require_labels(dataset: datasets.Dataset, split: str) -> None:
    """Refuse a split whose labels are unknown (-1), e.g. the masked SmSA test set."""
    labels = dataset["label"]
    if any(label == NO_LABEL for label in labels):
        raise MissingLabelsError(
            f"The {split!r} split has no labels (label -1: the SmSA test file is masked, its 'neutral' is a "
            "placeholder). Metrics need labels: use `hf-indosent predict --submission` to score it on the IndoNLU "
            "leaderboard, or point data_dir at a folder with the labelled test_preprocess.tsv."
        )
