"""Known errors in one line: an OS error names its path and the fix, a missing package the extra to install."""

from __future__ import annotations

import errno

# errno -> what to do about it; the path comes from the error itself
OS_FIXES = {
    errno.ENOSPC: "no space left on the device: free some space or write somewhere else (e.g. another --output_dir)",
    errno.EDQUOT: "disk quota exceeded: free some space or write somewhere else",
    errno.EACCES: "permission denied: choose a folder you can write to, or fix its permissions",
    errno.EPERM: "operation not permitted: choose a folder you can write to, or fix its permissions",
    errno.EROFS: "read-only file system: choose a writable folder",
    errno.ENOENT: "no such file or folder: check the path",
    errno.ENOTDIR: "a part of the path is a file, not a folder: check the path",
    errno.EISDIR: "this is a folder, a file was expected: check the path",
    errno.EEXIST: "something of that name is in the way (a file where a folder is needed?): check the path",
}


def describe(err: BaseException) -> str:
    """One line for a known error: OS errors name the path and the fix, others keep their own message."""
    if isinstance(err, OSError) and err.errno in OS_FIXES:
        path = err.filename if err.filename is not None else "(unknown path)"
        return f"{path}: {OS_FIXES[err.errno]}"
    text = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, ModuleNotFoundError):
        return f'{text}: install the missing package (see docs/install.md: pip install -e ".[...]" extras)'
    return text
