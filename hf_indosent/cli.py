"""`hf-indosent` command line: one subcommand per job, each owned by its module (imported only when used)."""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module, one-line help). Each module exposes `cli_main(argv: list[str]) -> int | None`.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("hf_indosent.training", "fine-tune a model on SmSA (or your data) with Accelerate"),
    "predict": ("hf_indosent.prediction", "label texts (arguments, stdin or a file) or write the IndoNLU submission"),
    "evaluate": ("hf_indosent.evaluation", "metrics, per-class report and confusion matrix on a labelled split"),
    "push": ("hf_indosent.hub", "upload a trained model with a generated model card to the Hugging Face Hub"),
}


def usage() -> str:
    lines = ["usage: hf-indosent <command> [options]   (hf-indosent <command> --help for details)", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"hf-indosent: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    return int(module.cli_main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
