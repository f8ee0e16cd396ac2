"""Two-stage recipes: adaptation (``hf-indosent adapt``) then fine-tuning, as one ``train`` command.

A fine-tuning recipe that names an adaptation recipe (``adapt_config``) whose ``output_dir`` is its own
``model_name_or_path`` runs that adaptation first when the folder holds no finished one, continues it where a stop
signal left it, and skips it when it is done (several seeds fine-tune the one adapted model). So the best offline recipe
is one command, and the same command, run again after any stop, carries on from where the work is saved.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from hf_indosent.core.arguments import RecipeError, parse_args
from hf_indosent.core.shell import rerun_command
from hf_indosent.core.stopping import Interrupted
from hf_indosent.data.arguments import DataArguments
from hf_indosent.modeling.loading import ADAPT_FILE
from hf_indosent.training.arguments import AdaptArguments, FineTuneArguments, ModelArguments

logger = logging.getLogger(__name__)

DEFINING = (
    "learning_rate",
    "warmup_ratio",
    "weight_decay",
    "per_device_train_batch_size",
    "mlm_probability",
    "max_grad_norm",
    "seed",
    "extend_vocab",
)
"""The settings that make an adaptation what it is: a finished one with others is not the recipe's."""


def read_adapt_recipe(model_args: ModelArguments) -> tuple[DataArguments, AdaptArguments]:
    """The adaptation recipe named by ``adapt_config``, checked against the fine-tuning recipe that names it."""
    data_args, adapt_args = parse_args([DataArguments, AdaptArguments], ["--config", model_args.adapt_config])
    if Path(adapt_args.output_dir) != Path(model_args.model_name_or_path):
        raise RecipeError(
            f"adapt_config {model_args.adapt_config!r} writes its model to {adapt_args.output_dir!r}, but "
            f"model_name_or_path is {model_args.model_name_or_path!r}: set model_name_or_path: "
            f"{adapt_args.output_dir} so fine-tuning starts from the adapted model"
        )
    return data_args, adapt_args


def finished_record(folder: Path) -> dict[str, Any] | None:
    """The folder's ``adapt.json`` (None when there is none)."""
    path = folder / ADAPT_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def check_same_adaptation(folder: Path, record: dict[str, Any], wanted: AdaptArguments) -> None:
    """Refuse an adapted folder made by another recipe: fine-tuning it would report results the recipe never gave."""
    first = (record.get("earlier") or [record])[0]
    settings = first.get("settings", {})
    differences = [
        f"{key} {settings[key]!r} (recipe: {getattr(wanted, key)!r})"
        for key in DEFINING
        if key in settings and settings[key] != getattr(wanted, key)
    ]
    if record.get("source_model") != wanted.model_name_or_path:
        differences.insert(0, f"source model {record.get('source_model')!r} (recipe: {wanted.model_name_or_path!r})")
    if differences:
        raise RecipeError(
            f"{folder} holds an adaptation with other settings: {', '.join(differences)}. Remove that folder to "
            "adapt again with the recipe, or set output_dir (and model_name_or_path) to a new folder"
        )


def adapt_first(model_args: ModelArguments, args: FineTuneArguments) -> FineTuneArguments:
    """Stage 1 of a two-stage recipe: run, continue or skip the adaptation; returns the fine-tuning arguments to use.

    When the adaptation runs in this process, fine-tuning computes in its precision (accelerate holds one per
    process): an unset ``mixed_precision`` takes it, a different explicit one is refused before any work."""
    if model_args.adapt_config is None:
        return args
    from hf_indosent.training.adaptation import adapt, epochs_left

    data_args, adapt_args = read_adapt_recipe(model_args)
    folder = Path(adapt_args.output_dir)
    record = finished_record(folder)
    if record is not None:
        check_same_adaptation(folder, record, adapt_args)
        if "stopped" not in record:
            logger.info("stage 1 (adaptation) already done: %s", folder)
            return args
    clash = args.mixed_precision and adapt_args.mixed_precision and args.mixed_precision != adapt_args.mixed_precision
    if clash:
        raise RecipeError(
            f"mixed_precision {args.mixed_precision!r} differs from the adaptation recipe's "
            f"{adapt_args.mixed_precision!r}: one process computes in one precision; set the same in both recipes"
        )
    if record is not None:  # stopped part-way: adapt the saved model for the epochs left, into the same folder
        stopped = record["stopped"]
        adapt_args = dataclasses.replace(
            adapt_args,
            model_name_or_path=str(folder),
            overwrite_output_dir=True,
            num_train_epochs=epochs_left(stopped, record["settings"]["num_train_epochs"]),
            extend_vocab=0,  # its words are in the saved vocabulary already
        )
    try:
        done = adapt(data_args, adapt_args, in_place=record is not None)
    except Interrupted as err:
        again = rerun_command(drop_values=("--resume_from_checkpoint",))
        raise Interrupted(
            err.signum,
            f"stopped in stage 1 (adaptation): the model adapted so far is saved in {folder}. "
            f"Carry on with the same command: {again}",
        ) from None
    return args if args.mixed_precision else dataclasses.replace(args, mixed_precision=done["mixed_precision"])
