"""Fault injection for tests: run `hf-indosent train`, SIGKILLing this process at the N-th call of a function.

    python tests/crash_runner.py hf_indosent.training.loop:save_checkpoint 4 after -- --output_dir ... (train arguments)

`before` kills on entry to the N-th call, `after` once it has returned. SIGKILL leaves no chance to clean up,
like a power cut or the out-of-memory killer. ``CRASH_SIGNAL=SIGINT`` (or SIGTERM) sends that signal instead, as
Ctrl-C or a scheduler's stop would; ``CRASH_GROUP=1`` sends it to the whole process group, as a terminal's Ctrl-C
reaches both ``accelerate launch`` and the training process it started.
"""

from __future__ import annotations

import functools
import importlib
import os
import signal
import sys

SIGNAL = getattr(signal, os.environ.get("CRASH_SIGNAL", "SIGKILL"))


def send() -> None:
    if os.environ.get("CRASH_GROUP") == "1":
        os.killpg(os.getpgrp(), SIGNAL)
    else:
        os.kill(os.getpid(), SIGNAL)


def kill_at(target: str, nth: int, when: str) -> None:
    module_name, name = target.split(":")
    module = importlib.import_module(module_name)
    original = getattr(module, name)
    calls = 0

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == nth and when == "before":
            send()
        result = original(*args, **kwargs)
        if calls == nth and when == "after":
            send()
        return result

    setattr(module, name, wrapper)


if __name__ == "__main__":
    target, nth, when, separator, *train_args = sys.argv[1:]
    if separator != "--":
        raise SystemExit(__doc__)
    import hf_indosent.training.loop  # noqa: F401  (first: patch only the name the target module itself looks up)
    from hf_indosent.cli import main

    kill_at(target, int(nth), when)
    sys.exit(main(["train", *train_args]))
