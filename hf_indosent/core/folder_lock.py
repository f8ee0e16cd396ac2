"""The one lock of every folder a command writes (a training run, an adapted model, a baseline, an export, seeds).

Two writers into one folder lose work: the second deletes or overwrites what the first is writing, and both exit 0.
Every writing command holds :class:`FolderLock` while it runs, so a second one is refused at once, naming the first
(process, host, start time and command). ``flock`` on ``folder/.lock``: the kernel drops it when its process dies,
however it dies, so a stale lock (its process gone, its file left behind) is simply taken over. Standard library
only, and a context manager::

    with FolderLock(output_dir, job="baseline run"):
        ...  # check the folder, then write it

Under several processes only the main one takes it (``RANK`` 0, as set by ``accelerate launch`` and ``torchrun``);
:func:`hf_indosent.training.run_folder.lock_run_dir` also tells the other processes when it is refused. A command that
swaps the whole folder for a finished copy (:func:`hf_indosent.core.files.replace_dir`) keeps holding it: the lock
file is linked into the copy first (:func:`carry_lock`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from hf_indosent.core.shell import rerun_command

LOCK_FILE = ".lock"
SHOWN_COMMAND = 300
"""Characters of the holder's command line a refusal shows (a recipe's overrides can make it long)."""


class FolderLockedError(OSError):
    """Another live process writes into the same folder; the message names it and what to do."""


def is_main_process() -> bool:
    """Whether this is the process that takes a folder's lock: the only one, or rank 0 of several."""
    return os.environ.get("RANK", "0") == "0"


class FolderLock:
    """An exclusive lock on the folder a command writes, held from :meth:`acquire` (or ``with``) to :meth:`release`.

    ``job`` says what holds it (``"training run"``, ``"baseline run"``, ``"export"``) in a second writer's refusal.
    The lock file records the holder (pid, host, start time, job, command) and is removed on release; a folder the
    lock had to create is removed again if nothing else was written into it. ``main_process`` (default: from
    ``RANK``) is False on the other processes of a multi-process run, where acquiring does nothing."""

    def __init__(self, folder: str | os.PathLike, *, job: str, main_process: bool | None = None) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.job = job
        self.main_process = is_main_process() if main_process is None else main_process
        self.fd: int | None = None
        self.created = False

    def acquire(self) -> FolderLock:
        if not self.main_process or self.fd is not None:
            return self
        self.created = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 4096).decode("utf-8", "replace")
                os.close(fd)
                raise FolderLockedError(
                    f"output_dir {str(self.folder)!r} is in use by {_holder(holder)}: wait for it to finish or stop "
                    "it, or choose another --output_dir"
                ) from None
            try:
                same_file = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same_file = False
            if same_file:
                break
            os.close(fd)  # the holder removed the file while we waited for it: lock the new one instead
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "job": self.job,
            "command": rerun_command(),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        self.path.unlink(missing_ok=True)  # before closing: a process that opens it next locks a new file
        os.close(self.fd)
        self.fd = None
        if self.created and not any(self.folder.iterdir()):
            self.folder.rmdir()  # a command refused before it wrote anything leaves no empty folder

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _holder(record: str) -> str:
    """``another baseline run (process 12 on host, started ...: hf-indosent baseline ...)`` from a lock record."""
    try:
        info: dict[str, Any] = json.loads(record)
        who = f"process {info['pid']} on {info['host']}, started {info['started']}"
    except (ValueError, KeyError, TypeError):
        return "another process"
    command = str(info.get("command") or "")
    if len(command) > SHOWN_COMMAND:
        command = command[: SHOWN_COMMAND - 3] + "..."
    return f"another {info.get('job', 'run')} ({who}{': ' + command if command else ''})"


def holds_files(folder: Path) -> bool:
    """Whether ``folder`` holds anything besides its lock file (which its writer, this process, has just made)."""
    return Path(folder).is_dir() and any(entry.name != LOCK_FILE for entry in Path(folder).iterdir())


def carry_lock(target: Path, staging: Path) -> None:
    """Link ``target``'s lock file into ``staging`` before ``staging`` replaces ``target`` whole.

    Both names are the same file, and the lock is the file's: the writer still holds its folder after the swap, and
    its release removes the lock file from the new folder. (Only the instant between the swap's two renames, when
    ``target`` does not exist, is unguarded.) A file system without hard links loses only that: the lock still holds
    until the swap."""
    lock = Path(target) / LOCK_FILE
    if lock.is_file() and not (Path(staging) / LOCK_FILE).exists():
        with contextlib.suppress(OSError):
            os.link(lock, Path(staging) / LOCK_FILE)
