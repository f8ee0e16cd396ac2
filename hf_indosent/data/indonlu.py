"""EmoT, CASA and HoASA, IndoNLU's sentiment tasks beside SmSA, as one `datasets` builder, and :func:`load_task`,
which loads any task of :data:`hf_indosent.data.tasks.TASKS` (SmSA included) by name.

Sources, as for SmSA:

* the pinned upstream files (default): train, validation and the *masked* test file, each checked against its sha256.
  Upstream's labelled ``test_preprocess.csv`` is not pinned (its bytes were not available when the pins were taken),
  so it is never downloaded: the default test split is masked and refuses to be scored;
* a local folder with the upstream file names (``data_dir=``). There a labelled ``test_preprocess.csv`` is preferred
  to the masked file and scores the test split. Having no pin, it is checked for its structure instead: the exact
  upstream header, a known label in every label column of every row, and upstream's number of test rows.

Parsing is SmSA's (:func:`hf_indosent.data.parsing.read_rows`): strict RFC 4180 CSV, the header must name exactly the
upstream columns, and a wrong column count, an unknown label or an empty text raises
:class:`~hf_indosent.data.parsing.DataFormatError` naming file, line and fix. Columns: ``text`` (upstream ``tweet``,
``sentence``, ``review``), then ``label`` (EmoT) or one ``ClassLabel`` per aspect, named by the aspect (CASA, HoASA).
Rows of the masked test file get label -1 in every label column, and
:func:`~hf_indosent.data.builders.require_labels` refuses them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import datasets

from hf_indosent.data.builders import build, download_verified, fingerprint, sources_from_dir
from hf_indosent.data.parsing import DataFormatError, SplitSource, read_rows
from hf_indosent.data.smsa import load_smsa
from hf_indosent.data.tasks import DEFAULT_TASK, SMSA, UPSTREAM_COMMIT, Task, get_task


def task_features(task: str | Task) -> datasets.Features:
    """The features of a task's splits: ``text``, then a ``ClassLabel`` per label column in IndoNLU's order."""
    task = get_task(task) if isinstance(task, str) else task
    labels = {column: datasets.ClassLabel(names=list(task.label_names)) for column in task.label_columns}
    return datasets.Features({task.text_column: datasets.Value("string"), **labels})


@dataclass
class IndonluConfig(datasets.BuilderConfig):
    """Builder config: the task's name and ``sources`` (split -> :class:`SplitSource`; ``None``: upstream download)."""

    task: str = "emot"
    sources: dict[str, SplitSource] | None = None


class Indonlu(datasets.GeneratorBasedBuilder):
    """IndoNLU EmoT (emotion), CASA and HoASA (aspect-based sentiment): CSV files with a header row."""

    BUILDER_CONFIG_CLASS = IndonluConfig
    VERSION = datasets.Version("1.0.0")

    @property
    def task(self) -> Task:
        return get_task(self.config.task)

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=f"IndoNLU {self.task.title}: {self.task.description}.",
            features=task_features(self.task),
            homepage="https://github.com/IndoNLP/indonlu",
            license="Apache-2.0 (IndoNLU repository)",
        )

    def _split_generators(self, dl_manager: datasets.DownloadManager) -> list[datasets.SplitGenerator]:
        task, sources = self.task, self.config.sources
        if sources is None:
            files = task.download_files
            urls = {split: task.upstream_url(name) for split, name in files.items()}
            pins = {split: task.sha256[name] for split, name in files.items()}
            paths = download_verified(dl_manager, urls, pins, title=task.title, local_copy=task.local_copy)
            sources = {split: csv_source(task, paths[split], files[split] != task.masked_test_file) for split in files}
        return [
            datasets.SplitGenerator(
                name=datasets.NamedSplit(split),
                gen_kwargs={"source": source, "expected_rows": _expected_rows(task, split, source)},
            )
            for split, source in sources.items()
        ]

    def _generate_examples(self, source: SplitSource, expected_rows: int | None) -> Iterator[tuple[int, dict]]:
        task = self.task
        labels = dict.fromkeys(task.label_columns, task.label_names)
        count = 0
        for number, text, ids in read_rows(source, labels, exact_columns=task.header):
            count += 1
            yield number, {task.text_column: text, **ids}
        if expected_rows is not None and count != expected_rows:
            name = task.files["test"]
            raise DataFormatError(
                source.path,
                None,
                f"holds {count:,} examples, but upstream's labelled {task.title} test file has {expected_rows:,} (the "
                "masked test file's rows, with their labels)",
                f"Use upstream's {name} (IndoNLP/indonlu, commit {UPSTREAM_COMMIT}, folder dataset/{task.folder}/) "
                f"unchanged. Its sha256 is not pinned, so its header, labels and row count are what is checked",
            )


def csv_source(task: Task, path: str, labelled: bool) -> SplitSource:
    """How to read one of a task's upstream CSV files (header row; the masked test file read as unlabelled)."""
    return SplitSource(
        path=path,
        labelled=labelled,
        header=True,
        text_column=task.source_text_column or task.text_column,
        label_column=task.label_columns[0],
    )


def _expected_rows(task: Task, split: str, source: SplitSource) -> int | None:
    """The row count a labelled test file must have when it has no pinned sha256 (checked instead); else ``None``."""
    unpinned_test = split == "test" and source.labelled and not task.test_pinned
    return task.rows["test"] if unpinned_test and Path(source.path).name == task.files["test"] else None


def load_indonlu(
    task: str | Task, data_dir: str | os.PathLike | None = None, *, cache_dir: str | os.PathLike | None = None
) -> datasets.DatasetDict:
    """Load EmoT, CASA or HoASA as a ``DatasetDict`` (``train``, ``validation``, ``test``).

    Args:
        task: ``"emot"``, ``"casa"``, ``"hoasa"`` (or a :class:`~hf_indosent.data.tasks.Task`).
        data_dir: folder with the upstream file names (``train_preprocess.csv``, ``valid_preprocess.csv`` and
            ``test_preprocess.csv`` or ``test_preprocess_masked_label.csv``), e.g. ``../shared/indonlu/emot``.
            Default: download the pinned upstream files (train, validation, masked test).
        cache_dir: where the Arrow cache goes (default: the ``datasets`` cache).
    """
    task = get_task(task) if isinstance(task, str) else task
    if task.header is None:
        raise ValueError(f"{task.title} files have no header: load it with load_task({task.name!r}) or load_smsa()")
    sources = None
    if data_dir is not None:
        sources = sources_from_dir(task, data_dir, lambda path, labelled: csv_source(task, path, labelled))
    options = f"task={task.name};labels={list(task.label_names)};header={task.header}"
    builder = Indonlu(
        cache_dir=str(cache_dir) if cache_dir is not None else None,
        dataset_name=task.name,
        config_id="default",
        hash=fingerprint(options, sources, UPSTREAM_COMMIT),
        task=task.name,
        sources=sources,
    )
    return build(builder)


def load_task(
    task: str | Task = DEFAULT_TASK,
    data_dir: str | os.PathLike | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
) -> datasets.DatasetDict:
    """Load any task of the family by name (``smsa``, ``emot``, ``casa``, ``hoasa``) from ``data_dir`` (its upstream
    file names) or, without it, from the pinned upstream files. SmSA goes through :func:`load_smsa` unchanged.

    The splits have ``text`` and the ``ClassLabel`` columns of ``get_task(task).label_columns``; masked test rows
    hold -1 and :func:`~hf_indosent.data.builders.require_labels` refuses them."""
    task = get_task(task) if isinstance(task, str) else task
    if task.name == SMSA.name:
        return load_smsa(data_dir=data_dir, cache_dir=cache_dir)
    return load_indonlu(task, data_dir, cache_dir=cache_dir)
