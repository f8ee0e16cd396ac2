"""Training's arguments as dataclasses, and the parser every command uses: YAML recipe, then command-line overrides.

Every value is checked in ``__post_init__`` so a bad recipe fails before any model or data is loaded, with a message
that names the value and the fix. The other commands' dataclasses are in :mod:`hf_indosent.inference.arguments`. Both
modules stay light (no torch, transformers models or datasets at import), so ``--help`` and usage errors answer at
once.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import types
import typing
from collections.abc import Sequence
from typing import Any, NoReturn, TypeVar

import yaml
from transformers import HfArgumentParser

from hf_indosent.core.suggest import did_you_mean

T = TypeVar("T")

DEFAULT_MODEL = "indobenchmark/indobert-base-p1"


class ArgumentError(ValueError):
    """An argument value that cannot work; the message names it and the fix."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise ArgumentError(message)


SEED_RANGE = range(2**32)
"""What NumPy, torch and scikit-learn all take as a seed."""


def check_numbers(instance: Any) -> None:
    """Every number option of a dataclass: floats finite (argparse and YAML read 'nan' and 'inf' as floats, and no
    option means either: an infinite learning rate trains NaN weights) and a seed in :data:`SEED_RANGE`, said before
    the run starts instead of deep inside it."""
    for item in dataclasses.fields(instance):
        value = getattr(instance, item.name)
        if isinstance(value, float) and not math.isfinite(value):
            example = f"like {item.default}" if isinstance(item.default, (int, float)) else "or leave it unset"
            raise ArgumentError(f"{item.name}={value} is not a finite number: give a finite one {example}")
    seed = getattr(instance, "seed", None)
    if isinstance(seed, int):
        check(seed in SEED_RANGE, f"seed={seed} is out of range: use a whole number from 0 to {SEED_RANGE[-1]}")


def check_mixed_precision(value: str | None) -> None:
    """``--mixed_precision``: unset (auto: measured per device) or one of accelerate's modes."""
    check(value in (None, "no", "fp16", "bf16"), f"mixed_precision={value!r} is unknown: use 'no', 'fp16' or 'bf16'")


# ----------------------------------------------------------------------------------------------------------------
# Recipes and the command line


class RecipeError(ArgumentError):
    """A YAML recipe that cannot be used: the message names the file, the key and what was expected."""


def _recipe(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise RecipeError(f"recipe {path!r} not found: pass --config configs/<recipe>.yaml")
    try:
        with open(path, encoding="utf-8") as handle:
            content = yaml.safe_load(handle)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise RecipeError(f"recipe {path!r} is not valid YAML{where} ({problem}): fix the syntax") from None
    except UnicodeDecodeError:
        raise RecipeError(f"recipe {path!r} is not UTF-8 text: save it as UTF-8") from None
    content = {} if content is None else content
    if not isinstance(content, dict):
        raise RecipeError(f"recipe {path!r} must be a YAML mapping of `argument: value` lines")
    return content


def _type_name(kind: Any) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(kind, str(kind))


def _coerce(path: str, key: str, value: Any, annotation: Any) -> Any:
    """``value`` from the recipe as the field's type; a RecipeError naming file, key and expected type otherwise."""
    options = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    if value is None:
        if type(None) in options:
            return None
        raise RecipeError(f"recipe {path!r}: {key} is empty; give it a value or remove the line")
    kind = next(option for option in options if option is not type(None))
    if typing.get_origin(kind) is list:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]  # one value where a list may go (`report_to: tensorboard`, as recipes always wrote it)
        if not isinstance(value, list) or any(isinstance(item, (dict, list)) for item in value):
            raise RecipeError(f"recipe {path!r}: {key}: {value!r} is not a list of values, e.g. [a, b, c]")
        return [str(item) for item in value]
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            return int(value)
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads 3e-6 (no dot) as a string
            except ValueError:
                pass
    elif kind is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise RecipeError(f"recipe {path!r}: {key}: {value!r} is not {_type_name(kind)}; fix the value in the recipe")


def _typed_recipe(path: str, dataclass_types: Sequence[type]) -> dict[str, Any]:
    recipe = _recipe(path)
    hints = {name: hint for t in dataclass_types for name, hint in typing.get_type_hints(t).items()}
    known = {f.name for t in dataclass_types for f in dataclasses.fields(t)}
    unknown = sorted(set(recipe) - known)
    if unknown:
        near = did_you_mean(unknown, known, quote=True)
        raise RecipeError(f"recipe {path!r} has unknown keys {unknown}{near}; see --help for valid names")
    return {key: _coerce(path, key, value, hints[key]) for key, value in recipe.items()}


class _Parser(HfArgumentParser):
    """Usage errors as one line (the full usage of `train` is long): ``prog: error: ... (see --help)``, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def unknown_options(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """The options in ``argv`` that ``parser`` does not know, as argparse would find them, but before it parses.

    argparse reports them last, after a missing or invalid value elsewhere (and the dataclasses' checks after that),
    so a typo hid behind a complaint it caused. Options are matched as argparse does: exactly, by an unambiguous
    prefix (``--packin`` is ``--packing``), with ``=value`` attached; ``-``, negative numbers and words with a space
    are values, and nothing after ``--`` is an option. A parser whose options cannot be read (argparse internals) is
    not checked."""
    options = set(getattr(parser, "_option_string_actions", {}))
    if not options:
        return []
    unknown = []
    for arg in argv:
        if arg == "--":
            break
        name = arg.split("=", 1)[0] if arg.startswith("--") else arg
        if name in ("", "-") or not name.startswith("-") or " " in name or _is_number(arg):
            continue  # a value
        abbreviates = parser.allow_abbrev and name.startswith("--") and any(o.startswith(name) for o in options)
        if name not in options and not abbreviates:
            unknown.append(name)
    return unknown


def _is_number(arg: str) -> bool:
    try:
        float(arg)
    except ValueError:
        return False
    return True


def check_unknown_options(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """Exit with a usage error naming each unknown option and the closest valid one (``did you mean ...?``)."""
    unknown = unknown_options(parser, argv)
    if unknown:
        known = [option for option in getattr(parser, "_option_string_actions", {}) if option.startswith("--")]
        plural = "s" if len(unknown) > 1 else ""
        parser.error(f"unknown option{plural} {', '.join(unknown)}{did_you_mean(unknown, known)}")


def parse_args(types_: Sequence[type[T]], argv: Sequence[str] | None = None, prog: str | None = None) -> tuple:
    """Parse ``--config recipe.yaml`` (optional) then command-line overrides into one instance of each dataclass.

    Unknown options (then unknown recipe keys) are reported first, with the closest valid name; values of the wrong
    type and invalid values after them. Each exits with a one-line error (exit code 2).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _Parser(types_, prog=prog)
    parser.add_argument("--config", default=None, help="YAML recipe; command-line options override its values.")
    check_unknown_options(parser, argv)  # a misspelt name first: any other complaint may be its consequence
    # the same parser reads --config first, so `--config=r.yaml` and abbreviations load the recipe as `--config r.yaml`
    config_path = parser.parse_known_args(argv)[0].config
    try:
        if config_path is not None:
            parser.set_defaults(**_typed_recipe(config_path, types_))
        *instances, _namespace_rest = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    except ValueError as err:
        parser.error(" ".join(str(err).split()))
    if _namespace_rest:
        parser.error(f"unrecognized arguments: {' '.join(_namespace_rest)}")
    return tuple(instance for instance in instances if dataclasses.is_dataclass(instance))
