"""What is wrong with an input path, from the file system alone: the one check behind every "--file", data file and
``check_input_file`` refusal, so each says what the path is (a folder, a symbolic-link loop, a dangling link) instead
of "does not exist". Standard library only: argument parsing uses it before any heavy import."""

from __future__ import annotations

import errno
import os
import stat


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
