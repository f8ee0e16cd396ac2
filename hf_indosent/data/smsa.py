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

import hashlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import datasets

from hf_indosent.data.parsing import LABEL_NAMES, NO_LABEL, DataFormatError, SplitSource, read_examples

logger = logging.getLogger(__name__)


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

# Bump when parsing changes, so cached Arrow files built by an older parser are not reused.
_PARSER_VERSION = "1"


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


# --------------------------------------------------------------------------------------------------------------
# File parsing


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
