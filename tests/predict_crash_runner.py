"""Fault injection for piece-wise predict: run `hf-indosent predict` with hooks in hf_indosent.inference.at_scale.

    python tests/predict_crash_runner.py [--kill_after K] [--slow_rank R --delay SECONDS] -- (predict arguments)

Also as the script of ``accelerate launch``. ``--kill_after K`` SIGKILLs the process right after its K-th committed
piece (no cleanup, like a power cut or the out-of-memory killer); ``--slow_rank R`` makes process R (its RANK) sleep
SECONDS before each of its pieces, so it falls behind the others.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

from crash_runner import kill_at


def slow_down(module: object, rank: int, delay: float) -> None:
    original = module.predict_piece

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        if int(os.environ.get("RANK", "0")) == rank:
            print(f"slow_rank {rank}: {delay} s before a piece", file=sys.stderr, flush=True)
            time.sleep(delay)
        return original(*args, **kwargs)

    module.predict_piece = wrapper


if __name__ == "__main__":
    hooks, separator, predict_args = sys.argv[1:], "--", []
    if separator in hooks:
        index = hooks.index(separator)
        hooks, predict_args = hooks[:index], hooks[index + 1 :]
    parser = argparse.ArgumentParser(usage=__doc__)
    parser.add_argument("--kill_after", type=int)
    parser.add_argument("--slow_rank", type=int)
    parser.add_argument("--delay", type=float, default=0.5)
    options = parser.parse_args(hooks)

    import hf_indosent.inference.at_scale as engine
    from hf_indosent.cli import main

    if options.kill_after is not None:
        kill_at("hf_indosent.inference.at_scale:commit_piece", options.kill_after, "after")
    if options.slow_rank is not None:
        slow_down(engine, options.slow_rank, options.delay)
    sys.exit(main(["predict", *predict_args]))
