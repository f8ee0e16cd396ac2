"""Commands shown to people, quoted for the shell they are pasted into: every "run this" in a message comes from here.

A path with a space or a non-ASCII letter (``my runs/ulasan é``) pasted unquoted splits into several arguments;
:func:`command` quotes each part with :func:`shlex.quote`, so ``bash -c`` (or :func:`shlex.split`) reads back exactly
the arguments it was given. :func:`rerun_command` and :func:`resume_command` rebuild this process's own command line
(the launcher's included), so a stopped run says the exact command that continues it. Standard library only: any
module may show a command.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

BOOLEAN_WORDS = ("true", "false", "yes", "no", "1", "0")


def command(*parts: str | os.PathLike) -> str:
    """``parts`` as one line for a POSIX shell: each one quoted where it needs it, so a paste gives them back."""
    return shlex.join(os.fspath(part) for part in parts)


def launcher_command() -> list[str] | None:
    """The parent's command line when it is ``accelerate launch`` (Linux ``/proc``), else ``None``.

    Read so a resume command repeats the launcher's own options (``--config_file``, ``--num_processes``, ...)."""
    try:
        raw = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
    except OSError:
        return None
    parent = [part.decode(errors="replace") for part in raw.split(b"\0") if part]
    names = [Path(part).name for part in parent[:3]]
    return parent if "launch" in parent and any(name.startswith("accelerate") for name in names) else None


def rerun_command(
    argv: list[str] | None = None,
    launcher: list[str] | None = None,
    *,
    drop_flags: tuple[str, ...] = (),
    drop_values: tuple[str, ...] = (),
    add: tuple[str, ...] = (),
) -> str:
    """This process's own command line again, without the options in ``drop_flags`` (booleans, with or without a
    value) and ``drop_values`` (with their value), and with ``add`` at the end.

    Under ``accelerate launch`` (``launcher``: its command line; default: read from the parent process) the launcher
    options come along, so a run on 4 processes continues on 4."""
    argv = list(sys.argv if argv is None else argv)
    script, rest = argv[0], argv[1:]
    kept: list[str] = []
    skip = False
    for index, arg in enumerate(rest):
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in drop_flags or name in drop_values:
            following = rest[index + 1] if index + 1 < len(rest) else ""
            skip = "=" not in arg and (name in drop_values or following.lower() in BOOLEAN_WORDS)
            continue
        kept.append(arg)
    if Path(script).name == "hf-indosent":
        prefix = ["hf-indosent"]
    elif "ACCELERATE_MIXED_PRECISION" in os.environ:  # set by `accelerate launch`
        launcher = launcher if launcher is not None else launcher_command()
        # the launcher's line ends with the script (or -m module) and exactly this process's arguments
        tail = len(launcher or []) - len(rest) - 1
        if launcher and "launch" in launcher[:tail] and launcher[tail + 1 :] == rest:
            prefix = ["accelerate", *launcher[launcher.index("launch") : tail + 1]]
        else:
            prefix = ["accelerate", "launch", *program(script)]
    else:
        prefix = ["python", *program(script)]
    return command(*prefix, *kept, *add)


def program(script: str) -> list[str]:
    """What follows ``python`` (or ``accelerate launch``) to run ``script`` again: ``-m hf_indosent`` for a package's
    ``__main__.py`` (what ``python -m hf_indosent`` puts in ``sys.argv[0]``; run as a file, it would not import its
    package), else the script itself."""
    path = Path(script)
    return ["-m", path.parent.name] if path.name == "__main__.py" and path.parent.name else [script]


def resume_command(argv: list[str] | None = None, launcher: list[str] | None = None) -> str:
    """This run's own command line with ``--resume_from_checkpoint latest`` (and without overwriting)."""
    return rerun_command(
        argv,
        launcher,
        drop_flags=("--overwrite_output_dir",),
        drop_values=("--resume_from_checkpoint",),
        add=("--resume_from_checkpoint", "latest"),
    )
