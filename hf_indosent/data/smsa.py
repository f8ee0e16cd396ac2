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

SmSA's pins live with its siblings' in :mod:`hf_indosent.data.tasks`; checksums, errors, the cache key and
:func:`require_labels` are shared with EmoT, CASA and HoASA in :mod:`hf_indosent.data.builders` and stay importable
from here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import datasets

from hf_indosent.data.builders import (
    ChecksumError,
    DownloadError,
    MissingLabelsError,
    build,
    download_verified,
    fingerprint,
    require_labels,
    sha256_of,
    sources_from_dir,
    verify_sha256,
)
from hf_indosent.data.parsing import LABEL_NAMES, NO_LABEL, DataFormatError, SplitSource, read_examples
from hf_indosent.data.tasks import SMSA, SPLITS, UPSTREAM_COMMIT

logger = logging.getLogger(__name__)

__all__ = [
    "LABEL_NAMES",
    "NO_LABEL",
    "ChecksumError",
    "DataFormatError",
    "DownloadError",
    "MissingLabelsError",
    "Smsa",
    "SmsaConfig",
    "load_smsa",
    "require_labels",
    "sha256_of",
    "verify_sha256",
]

UPSTREAM_URL = f"https://raw.githubusercontent.com/IndoNLP/indonlu/{{commit}}/dataset/{SMSA.folder}/{{filename}}"
UPSTREAM_FILES: dict[str, str] = dict(SMSA.files)
MASKED_TEST_FILE = SMSA.masked_test_file
SHA256: dict[str, str] = dict(SMSA.sha256)
"""The pins live in :data:`hf_indosent.data.tasks.SMSA`; the builder reads this module's copy (tests replace it)."""


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
            pins = {split: SHA256[name] for split, name in UPSTREAM_FILES.items()}
            paths = download_verified(dl_manager, urls, pins, title="SmSA", local_copy="../shared/smsa")
            sources = {split: SplitSource(path=paths[split]) for split in UPSTREAM_FILES}
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
    return sources_from_dir(SMSA, data_dir, lambda path, labelled: SplitSource(path=path, labelled=labelled))


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
        hash=fingerprint(f"labels={list(names)}", sources, UPSTREAM_COMMIT),
        sources=sources,
        label_names=names,
    )
    return build(builder)
