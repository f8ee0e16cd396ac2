"""File safety, one mechanism for every stage: atomic writes and folder swaps, staged folders, fingerprints, checks
that an output path spares the inputs, the one ``write_json``, and what is wrong with an input path.

Standard library only: argument parsing uses it before any heavy import."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from hf_indosent.core.folder_lock import carry_lock

logger = logging.getLogger(__name__)
MIB = 1024 * 1024


def path_problem(path: str | os.PathLike) -> tuple[str, str] | None:
    """``(problem, fix)`` for a path that is not a readable file, ``None`` for one that is (a pipe, ``<(zcat x.gz)``,
    is one)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            target = os.readlink(path)
            return f"is a symbolic link to {target!r}, which does not exist", "Pass the path of the file itself"
        return "does not exist", "Check the path and the file name"
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "is a symbolic link loop (following it leads back to itself)", "Pass the file's real path"
        return f"cannot be opened ({err.strerror})", "Check the path"
    if stat.S_ISDIR(mode):
        return "is a directory (a folder), not a file", "Pass the path of a file in it"
    return None


def input_file_error(path: str | os.PathLike, option: str) -> str | None:
    """The one-line refusal of ``option``'s ``path`` when it is not a readable file, else ``None``."""
    problem = path_problem(path)
    if problem is None:
        return None
    what, fix = problem
    return f"{option} {os.fspath(path)!r} {what}: {fix[0].lower()}{fix[1:]}"


def file_fingerprint(path: str | Path) -> dict[str, Any]:
    """Size, modification time and a hash of the first and last MiB: cheap on any size, and changes with any edit
    that a copy, an append or a rewrite makes."""
    stat = os.stat(path)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        digest.update(handle.read(MIB))
        if stat.st_size > MIB:
            handle.seek(max(MIB, stat.st_size - MIB))
            digest.update(handle.read(MIB))
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256_ends": digest.hexdigest()}


def folder_fingerprint(folder: str | Path) -> dict[str, dict[str, Any]]:
    """:func:`file_fingerprint` of every visible file in ``folder`` (a saved model: config, weights, tokenizer)."""
    files = sorted(path for path in Path(folder).iterdir() if path.is_file() and not path.name.startswith("."))
    return {path.name: file_fingerprint(path) for path in files}


def _same_path(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)  # also through symbolic and hard links
    return a.resolve() == b.resolve()


def check_output_file(output: str | Path, option: str) -> None:
    """An output file's path must name a file whose folders can exist: said now, naming the user's path (not the
    temporary file beside it that the write would fail on, after all the work)."""
    path = Path(output)
    if path.is_dir():
        raise ValueError(f"{option} {str(output)!r} is a folder: name a file in it, e.g. {str(path / 'out.jsonl')!r}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{option} {str(output)!r}: {str(parent)!r} is a file, not a folder: check the path")
            break


def check_output_folder(output_dir: str | Path, option: str, inputs: Mapping[str, str | Path | None]) -> None:
    """A run's output folder: a folder (or none yet) under folders, and none of the folders and files it reads (a
    training into its own model or data folder would mix its run files with them)."""
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option} {str(output_dir)!r} is a file: choose a folder")
    check_output_file(path / "_", option)  # its parents are folders
    check_output_spares_inputs(path, option, inputs)


def check_output_spares_inputs(output: str | Path, option: str, inputs: Mapping[str, str | Path | None]) -> None:
    """Refuse an output that would replace what the run reads (``inputs``: option -> file or folder): the same path
    (predictions written over the texts they came from), or an existing file inside an input folder (the model's,
    the dataset's). Checked before any work, so nothing is lost and no time is spent."""
    target = Path(output)
    for name, source in inputs.items():
        if source is None or not Path(source).exists():
            continue
        folder = Path(source)
        if _same_path(target, folder):
            raise ValueError(
                f"{option} {str(output)!r} is {name} {str(source)!r}, which this run reads: writing there would "
                f"destroy it; choose another {option}"
            )
        if folder.is_dir() and target.is_file() and target.resolve().is_relative_to(folder.resolve()):
            raise ValueError(
                f"{option} {str(output)!r} is a file of {name} {str(source)!r}, which this run reads: writing there "
                f"would replace it; choose another {option}"
            )


@contextlib.contextmanager
def made_folder(folder: str | Path) -> Iterator[Path]:
    """``folder``, made with its missing parents for the block; when the block fails (Ctrl-C included), the folders it
    made are removed again while they are empty, so a run refused half-way leaves no empty output folder behind."""
    folder = Path(folder)
    missing = [path for path in (folder, *folder.parents) if not path.exists()]  # deepest first
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield folder
    except BaseException:
        for path in missing:
            try:
                path.rmdir()
            except OSError:  # something was written into it (or it is gone): keep it and its parents
                break
        raise


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (missing folders created) to write to, renamed onto ``path`` when the block
    succeeds and removed when it fails, Ctrl-C and SIGTERM included: ``path`` keeps the old file or the whole new
    one, and folders made for it are removed again. The rename is atomic because both names are in the same folder."""
    path = Path(path)
    with made_folder(path.parent), _replaced_on_success(path) as temp:
        yield temp


@contextlib.contextmanager
def _replaced_on_success(path: Path) -> Iterator[Path]:
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield temp
        descriptor = os.open(temp, os.O_RDONLY)
        try:
            os.fsync(descriptor)  # the data is on disk before the new name points at it
        finally:
            os.close(descriptor)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def removed_on_error(folder: Path) -> Iterator[None]:
    """Delete a staging ``folder`` if writing it fails (disk full, permissions): never leave half a copy behind."""
    try:
        yield
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


@contextlib.contextmanager
def staged_dir(target: Path) -> Iterator[Path]:
    """A fresh staging folder beside ``target`` to write into: swapped in whole (:func:`replace_dir`) when the block
    succeeds, deleted when it fails, so ``target`` is never half-written."""
    staging = target.with_name(f".{target.name}.tmp")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    with removed_on_error(staging):
        yield staging
    replace_dir(staging, target)


def make_readable(folder: Path) -> None:
    """Give written files the usual mode (0644 under the umask): some writers create them 0600 via temp files."""
    umask = os.umask(0)
    os.umask(umask)
    for path in folder.rglob("*"):
        if path.is_file():
            path.chmod(0o666 & ~umask)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` so that ``path`` holds either the old or the new content, never a torn file."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable: without it a power cut can undo a rename the program already saw."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_dir(staging: Path, target: Path) -> None:
    """Move a finished ``staging`` folder to ``target``; the old ``target`` stays on disk until the new one is in."""
    old = target.with_name(f".{target.name}.old")
    if old.exists():
        shutil.rmtree(old)
    carry_lock(target, staging)  # a folder swapped whole stays its writer's (hf_indosent.core.folder_lock)
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    fsync_dir(target.parent)
    if old.exists():
        shutil.rmtree(old)


def recover_dir(target: Path) -> None:
    """Undo a swap interrupted between its two renames: bring the previous folder back."""
    old = target.with_name(f".{target.name}.old")
    if not target.exists() and old.exists():
        logger.warning("Restoring %s from an interrupted update", target)
        os.replace(old, target)


def write_json(path: Path, payload: Any) -> None:
    write_atomic(Path(path), json.dumps(payload, indent=2, sort_keys=False) + "\n")
