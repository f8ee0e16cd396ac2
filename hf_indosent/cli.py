"""`hf-indosent` command line: one runner for every subcommand.

Arguments are parsed first, from light modules (``--help`` and usage errors answer in about a
second); only then is the job's module (torch, transformers, datasets) imported and run. Every known failure becomes
one line on stderr and an exit code: 1 for an error the user can fix, 2 for a usage error, 128 + the signal's number
for a stop signal (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP: :mod:`hf_indosent.core.stopping`), and 141 (SIGPIPE's), with no
message, when the reader of stdout went away (``predict | head``), as Unix tools do. ``--debug`` (or
``HF_INDOSENT_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import NamedTuple

from hf_indosent.core.errors import describe
from hf_indosent.core.stopping import Interrupted, handled, raise_interrupted, say, silence
from hf_indosent.core.suggest import did_you_mean

DEBUG_ENV = "HF_INDOSENT_DEBUG"


ARGUMENT_MODULES = (
    "hf_indosent.data.arguments",
    "hf_indosent.training.arguments",
    "hf_indosent.inference.arguments",
    "hf_indosent.sharing.arguments",
    "hf_indosent.serving.arguments",
    "hf_indosent.experiments.arguments",
)
"""Where the commands' argument dataclasses live (light modules: parsing never waits on torch)."""


class Command(NamedTuple):
    arguments: tuple[str, ...]  # dataclass names in ARGUMENT_MODULES, parsed in this order
    run: str  # "module:function", called with the parsed dataclasses
    help: str


COMMANDS: dict[str, Command] = {
    "train": Command(
        ("ModelArguments", "DataArguments", "FineTuneArguments"),
        "hf_indosent.training.loop:cli_run",
        "fine-tune a model on SmSA (or your data) with Accelerate",
    ),
    "predict": Command(
        ("InferenceArguments", "PredictArguments"),
        "hf_indosent.inference.predict:cli_run",
        "label texts (arguments, stdin or a file) or write the IndoNLU submission",
    ),
    "evaluate": Command(
        ("InferenceArguments", "EvaluateArguments"),
        "hf_indosent.inference.evaluate:cli_run",
        "metrics, per-class report and confusion matrix on a labelled split",
    ),
    "push": Command(
        ("PushArguments",),
        "hf_indosent.sharing.push:cli_run",
        "upload a trained model with a generated model card to the Hugging Face Hub (and a demo Space)",
    ),
    "demo": Command(
        ("DemoArguments",),
        "hf_indosent.sharing.demo:cli_run",
        "a web page to try a model: text box, file upload, its metrics (Gradio)",
    ),
    "export": Command(
        ("ExportArguments",),
        "hf_indosent.inference.export:cli_run",
        "write a model as ONNX (fp32 and int8) for fast CPU inference with predict --backend onnx",
    ),
    "adapt": Command(
        ("DataArguments", "AdaptArguments"),
        "hf_indosent.training.adaptation:cli_run",
        "masked-LM training on the task's texts before fine-tuning (task-adaptive pre-training)",
    ),
    "baseline": Command(
        ("DataArguments", "BaselineArguments"),
        "hf_indosent.inference.baseline:cli_run",
        "TF-IDF + logistic regression baseline on the same splits and metrics (a minute on a CPU)",
    ),
    "sweep": Command(
        ("ModelArguments", "DataArguments", "FineTuneArguments", "SweepArguments"),
        "hf_indosent.experiments.sweep:cli_run",
        "a resumable Optuna hyperparameter search over a recipe; leaves the best recipe, model and a table of trials",
    ),
    "serve": Command(
        ("InferenceArguments", "ServeArguments"),
        "hf_indosent.serving.server:cli_run",
        "a TEI-compatible HTTP service for a model: dynamic batching, limits, health, metrics",
    ),
}


def known_errors() -> tuple[type[BaseException], ...]:
    """Errors that are the user's to fix (bad value, file, network, disk), as opposed to bugs (traceback)."""
    known: list[type[BaseException]] = [ValueError, OSError, ImportError]
    for module, names in (
        ("hf_indosent.data.smsa", ("ChecksumError", "DownloadError")),
        ("hf_indosent.sharing.hub", ("HubPushError",)),
        ("hf_indosent.training.step", ("NonFiniteLossError",)),
    ):
        loaded = sys.modules.get(module)  # only modules the command imported can have raised their errors
        known += [getattr(loaded, name) for name in names if loaded is not None and hasattr(loaded, name)]
    return tuple(known)


def _rank_prefix() -> str:
    rank = os.environ.get("RANK", "0")
    return "" if rank == "0" else f"[rank {rank}] "


def run_command(prog: str, body: Callable[[], int | None], debug: bool = False) -> int:
    """Run ``body`` and turn known failures into one line on stderr and an exit code (see module docstring).

    A stop signal whose default would kill the process at once (SIGTERM, SIGHUP) raises :class:`Interrupted`
    instead, so ``finally`` blocks run and partial outputs are removed; commands that save work on a stop install
    their own handler (:class:`hf_indosent.core.stopping.StopRequests`) inside. The final line is written only if it
    can be: after a closed terminal or a gone reader the exit code alone tells the outcome."""
    debug = debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    with handled(raise_interrupted, over_default_only=True):
        try:
            return int(body() or 0)
        except Interrupted as stop:
            if debug:
                raise
            say(f"{_rank_prefix()}{prog}: {stop}", sys.stderr)
            return 128 + stop.signum
        except KeyboardInterrupt:
            if debug:
                raise
            say(f"{_rank_prefix()}{prog}: interrupted (Ctrl-C); nothing was written after that point", sys.stderr)
            return 130
        except BrokenPipeError:  # the reader of stdout went away (`predict | head`): a quiet stop, as Unix tools do
            if debug:
                raise
            silence(sys.stdout)  # nothing more can reach it, Python's final flush included
            return 128 + signal.SIGPIPE
        except Exception as err:
            if debug or not isinstance(err, known_errors()):
                raise
            say(f"{_rank_prefix()}{prog}: error: {describe(err)} (--debug shows the traceback)", sys.stderr)
            return 1


def dispatch(name: str, argv: list[str]) -> int:
    """Parse ``argv`` for command ``name``, then import and run the job (inside :func:`run_command`)."""
    command = COMMANDS[name]
    prog = f"hf-indosent {name}"
    debug = "--debug" in argv
    argv = [arg for arg in argv if arg != "--debug"]

    def body() -> int | None:
        from hf_indosent.core.arguments import parse_args

        modules = [importlib.import_module(name) for name in ARGUMENT_MODULES]
        classes = [next(getattr(m, name) for m in modules if hasattr(m, name)) for name in command.arguments]
        parsed = parse_args(classes, argv, prog=prog)
        logging.basicConfig(level=logging.INFO, format="%(message)s")  # the jobs' progress lines, for every command
        module_name, function = command.run.split(":")
        return getattr(importlib.import_module(module_name), function)(*parsed)

    return run_command(prog, body, debug)


def usage() -> str:
    lines = ["usage: hf-indosent <command> [options]   (hf-indosent <command> --help for details)", "", "commands:"]
    lines += [f"  {name:<10} {command.help}" for name, command in COMMANDS.items()]
    lines += ["", f"--debug (or {DEBUG_ENV}=1) shows the traceback of an error."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(usage())
        return 0
    if argv[0] not in COMMANDS:
        hint = did_you_mean(argv[0], COMMANDS, quote=True)
        print(f"hf-indosent: unknown command {argv[0]!r}{hint}\n\n{usage()}", file=sys.stderr)
        return 2
    return dispatch(argv[0], argv[1:])


if __name__ == "__main__":
    sys.exit(main())
