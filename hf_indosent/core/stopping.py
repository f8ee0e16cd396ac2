"""How a command is asked to stop, in one place: the stop signals, their handlers, and output with nowhere to go.

:data:`STOP_SIGNALS` are the requests to stop that a long command answers by saving its work: SIGINT (Ctrl-C),
SIGTERM (a scheduler, ``kill``) and SIGHUP (the terminal closed: an SSH session dropped, a window shut). Every
handler is installed through :func:`handled`, which leaves a signal that was ignored at start ignored: ``nohup``
ignores SIGHUP precisely so that closing the terminal does not stop the run. After SIGHUP the terminal is gone and
writing to it fails (EIO); :func:`leave_closed_terminal` points stdout/stderr that were that terminal at /dev/null,
so the messages still to come cannot turn a saved stop into a crash. Standard library only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import stat
import threading
from collections.abc import Callable, Iterator
from typing import Any, TextIO

logger = logging.getLogger(__name__)

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""Signals that ask a command to stop: a long one saves its work first. Exit code 128 + the signal's number."""

Handler = Callable[[int, Any], None]


class Interrupted(Exception):
    """The run was stopped by a signal; work is saved where the message says. Exit code 128 + signal number."""

    def __init__(self, signum: int, message: str = "") -> None:
        name = signal.Signals(signum).name
        super().__init__(message or f"interrupted ({name}); nothing was written after that point")
        self.signum = signum


@contextlib.contextmanager
def handled(handler: Handler, *, over_default_only: bool = False) -> Iterator[tuple[int, ...]]:
    """``handler`` for every stop signal while the block runs (the previous handlers come back after it); yields the
    signals it handles.

    A signal ignored at start stays ignored (``nohup`` ignores SIGHUP, a background job of a script SIGINT): the
    user asked for that. ``over_default_only`` replaces only the default action (dying at once), so an outer
    handler, Python's KeyboardInterrupt for SIGINT included, keeps its signal. Signal handlers can only be set in the
    main thread; elsewhere nothing is installed."""
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            current = signal.getsignal(signum)
            if current is signal.SIG_IGN or (over_default_only and current is not signal.SIG_DFL):
                continue
            previous[signum] = signal.signal(signum, handler)
    try:
        yield tuple(previous)
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def raise_interrupted(signum: int, frame: Any) -> None:
    """The handler of a command that has nothing to save: stop now with :class:`Interrupted` (exit 128 + signum)."""
    if signum == signal.SIGHUP:
        leave_closed_terminal()
    raise Interrupted(signum)


def _to_devnull(fd: int) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def leave_closed_terminal() -> None:
    """After SIGHUP: stdout and stderr that are a terminal (a character device) write to /dev/null from now on.

    The terminal that sent SIGHUP is gone and every write to it fails with EIO, so a progress line, a log line or the
    final message would otherwise raise in the middle of saving the run. Files and pipes keep their output: the
    final message with the resume command still reaches ``> train.log``."""
    for fd in (1, 2):
        with contextlib.suppress(OSError):
            if stat.S_ISCHR(os.fstat(fd).st_mode):
                _to_devnull(fd)


def silence(stream: TextIO) -> None:
    """Send whatever ``stream`` still writes, its buffer at exit included, to /dev/null: its reader has gone.

    Without this, Python's final flush of a stdout whose pipe was closed prints "Exception ignored ... BrokenPipeError"
    after the command already stopped quietly. A stream with no file descriptor (a test's capture) is left alone."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return
    with contextlib.suppress(OSError):
        _to_devnull(fd)


def say(line: str, stream: TextIO) -> None:
    """Print ``line`` to ``stream`` unless it cannot be written any more (a closed terminal: EIO; a reader that went
    away: EPIPE): the command's outcome is already decided, and its exit code still tells it."""
    try:
        print(line, file=stream, flush=True)
    except OSError:
        silence(stream)


class StopRequests:
    """A stop signal while training (:data:`~hf_indosent.core.stopping.STOP_SIGNALS`: Ctrl-C, SIGTERM, a closed
    terminal's SIGHUP): save a checkpoint at the next optimizer step, then stop.

    The first signal only sets :attr:`signum`; the loop checks it after each step. The same signal again stops at once
    (:class:`~hf_indosent.core.stopping.Interrupted`), losing only the steps since the last checkpoint. The other signal
    does not: ``accelerate launch`` (1.16 on) answers a terminal's Ctrl-C, which reached this process too, by sending
    it SIGTERM (and SIGKILL 5 s later), which is the same request, not a second one. SIGHUP never stops at once: a
    closing terminal sends it more than once (the shell passes it on to its jobs, then the kernel sends it as the
    shell exits), and nobody is left to insist. A signal ignored at start (``nohup``) stays ignored.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._handling: contextlib.ExitStack | None = None

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGHUP:
            leave_closed_terminal()  # before any message: the terminal is gone
        if self.signum == signum and signum != signal.SIGHUP:
            raise Interrupted(signum, "interrupted again: stopped at once; resume from the last complete checkpoint")
        if self.signum is not None:
            logger.warning("%s received as well: still saving a checkpoint after this step", name)
            return
        self.signum = signum
        again = "" if signum == signal.SIGHUP else " (send it again to stop at once)"
        logger.warning("%s received: saving a checkpoint after this step, then stopping%s", name, again)

    def __enter__(self) -> StopRequests:
        self._handling = contextlib.ExitStack()
        self._handling.enter_context(handled(self._handle))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handling is not None:
            self._handling.close()
            self._handling = None
