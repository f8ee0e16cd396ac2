"""What every IndoNLU dataset builder shares: pinned downloads checked by sha256, an Arrow cache key over the files'
bytes, our file/line errors unwrapped from `datasets`, and refusing to score a split whose labels are masked.

Used by :mod:`hf_indosent.data.smsa` (SmSA) and :mod:`hf_indosent.data.indonlu` (EmoT, CASA, HoASA).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import datasets

from hf_indosent.data.parsing import NO_LABEL, DataFormatError, SplitSource
from hf_indosent.data.tasks import SMSA, TASKS, Task

PARSER_VERSION = "1"
"""Bump when parsing changes, so cached Arrow files built by an older parser are not reused."""


class ChecksumError(RuntimeError):
    """A downloaded file whose sha256 differs from the pinned value."""


class DownloadError(RuntimeError):
    """The pinned upstream files could not be downloaded (no network, offline mode, server error)."""


class MissingLabelsError(ValueError):
    """A split without labels (e.g. a masked IndoNLU test set) was used where labels are required."""


# --------------------------------------------------------------------------------------------------------------
# Checksums and downloads


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


def download_verified(
    dl_manager: datasets.DownloadManager,
    urls: Mapping[str, str],
    sha256: Mapping[str, str],
    *,
    title: str,
    local_copy: str,
) -> dict[str, str]:
    """Download ``urls`` (split -> URL) and check each file against ``sha256`` (split -> hex digest); split -> path.

    No network raises :class:`DownloadError` saying which folder to download by hand and pass as ``data_dir``
    (``local_copy`` is an example path); a changed file raises :class:`ChecksumError`."""
    try:
        paths = dl_manager.download(dict(urls))
    except (OSError, ConnectionError) as err:  # offline mode, DNS, refused, HTTP 404: all say "no files"
        folder = next(iter(urls.values())).rsplit("/", 1)[0] + "/"
        names = ", ".join(url.rsplit("/", 1)[1] for url in urls.values())
        raise DownloadError(
            f"cannot download the {title} files from {folder} ({type(err).__name__}); no network? Pass "
            f"--data_dir (data_dir=) with a folder holding {names} (e.g. {local_copy}), downloaded from that address"
        ) from None
    for split, url in urls.items():
        verify_sha256(paths[split], sha256[split], source=url)
    return {split: str(path) for split, path in paths.items()}


# --------------------------------------------------------------------------------------------------------------
# Building


def sources_from_dir(
    task: Task, data_dir: str | os.PathLike, source: Callable[[str, bool], SplitSource]
) -> dict[str, SplitSource]:
    """Split -> source for a folder with the task's upstream file names; ``source(path, labelled)`` says how to read
    one file. Train and validation are required; the test split comes from the labelled test file if present, else
    from the masked one (placeholder labels: read as unlabelled), else there is no test split."""
    folder = Path(data_dir)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"data_dir {str(folder)!r} is not a directory. Point it at a folder with the IndoNLU {task.title} files "
            f"({', '.join(task.files.values())}), e.g. {task.local_copy}, or omit it to download from upstream."
        )
    sources: dict[str, SplitSource] = {}
    for split in ("train", "validation"):
        path = folder / task.files[split]
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: data_dir must contain {task.files[split]}")
        sources[split] = source(str(path), True)
    if (folder / task.files["test"]).is_file():
        sources["test"] = source(str(folder / task.files["test"]), True)
    elif (folder / task.masked_test_file).is_file():
        # The masked file holds a placeholder label on every row: never treat that as a label.
        sources["test"] = source(str(folder / task.masked_test_file), False)
    return sources


def fingerprint(options: str, sources: Mapping[str, SplitSource] | None, upstream_commit: str) -> str:
    """Cache key that changes whenever a file's bytes, its reading options or ``options`` (labels, task) change."""
    digest = hashlib.sha256(f"parser={PARSER_VERSION};{options}".encode())
    if sources is None:
        digest.update(f"upstream={upstream_commit}".encode())
    else:
        for split in sorted(sources):
            source = sources[split]
            content = sha256_of(source.path) if os.path.isfile(source.path) else "missing"
            digest.update(f"{split}={source!r};{content}".encode())
    return digest.hexdigest()[:16]


def build(builder: datasets.DatasetBuilder) -> datasets.DatasetDict:
    """Prepare ``builder`` (nothing is cached from a failed build) and return its splits; a bad file raises our
    :class:`DataFormatError` naming file and line, not `datasets`' wrapper."""
    try:
        builder.download_and_prepare()
    except datasets.exceptions.DatasetGenerationError as err:
        if isinstance(err.__cause__, (DataFormatError, DownloadError)):
            raise err.__cause__ from None  # the user needs our file/line message, not the wrapper
        raise
    return builder.as_dataset()


# --------------------------------------------------------------------------------------------------------------
# Labels


def label_columns(dataset: datasets.Dataset) -> list[str]:
    """The dataset's ``ClassLabel`` columns (``label``, or one per aspect); ``["label"]`` when it has none typed."""
    found = [name for name, feature in dataset.features.items() if isinstance(feature, datasets.ClassLabel)]
    return found or ["label"]


def has_labels(dataset: datasets.Dataset) -> bool:
    """Whether every label column of every row holds a label (a masked IndoNLU test set holds -1)."""
    return not any(label == NO_LABEL for column in label_columns(dataset) for label in dataset[column])


def require_labels(dataset: datasets.Dataset, split: str) -> None:
    """Refuse a split whose labels are unknown (-1 in any label column), e.g. a masked IndoNLU test set.

    The message names the task's masked file and labelled file (told by the dataset's name; SmSA's otherwise)."""
    if has_labels(dataset):
        return
    task = TASKS.get(dataset.info.dataset_name or "", SMSA)
    where = " in its aspect columns" if task.is_aspect_based else ""
    raise MissingLabelsError(
        f"The {split!r} split has no labels (label -1{where}: the {task.title} test file is masked, its "
        f"{task.placeholder!r} is a placeholder). Metrics need labels: use `hf-indosent predict --submission` to "
        f"score it on the IndoNLU leaderboard, or point data_dir at a folder with the labelled {task.files['test']}."
    )
