"""Run `hf-indosent train` and record what this process changes under a folder, via Python audit hooks.

    python tests/audit_runner.py RECORD_DIR WATCHED_DIR -- (train arguments)

Writes RECORD_DIR/rank{RANK}.json: every open-for-write, mkdir, rename/replace, remove and rmtree below WATCHED_DIR.
Writes done in native code (safetensors, torch.save) raise no audit event and are not seen.
"""

from __future__ import annotations

import atexit
import json
import os
import sys

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def watch(record_dir: str, watched: str) -> None:
    root = os.path.realpath(watched)
    events: list[list[str]] = []

    def inside(path) -> bool:
        if isinstance(path, int) or path is None:
            return False
        return os.path.realpath(os.fsdecode(path)).startswith(root)

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & WRITE_FLAGS)
            if writing and inside(path):
                events.append([event, os.fsdecode(path)])
        elif event in ("os.mkdir", "os.remove", "os.rmdir", "shutil.rmtree") and inside(args[0]):
            events.append([event, os.fsdecode(args[0])])
        elif event == "os.rename" and (inside(args[0]) or inside(args[1])):
            events.append([event, os.fsdecode(args[1])])

    def dump() -> None:
        rank = os.environ.get("RANK", "0")
        with open(os.path.join(record_dir, f"rank{rank}.json"), "w") as handle:
            json.dump(events, handle)

    atexit.register(dump)
    sys.addaudithook(hook)


if __name__ == "__main__":
    record_dir, watched, separator, *train_args = sys.argv[1:]
    if separator != "--":
        raise SystemExit(__doc__)
    from hf_indosent.cli import main

    watch(record_dir, watched)
    sys.exit(main(["train", *train_args]))
