"""Model loading: `AutoModelForSequenceClassification` with label names from the dataset, and every load checked.

What a model argument names is checked from its files first (:mod:`hf_indosent.modeling.folders`, which needs no torch).
Loading then checks the weights themselves: a trained classifier (:func:`load_classifier`: predict, evaluate, demo,
export, push, training's best model) must get every parameter from its weights with the shape its config gives it,
never a freshly initialised layer; a base model to fine-tune (:func:`load_model`) may get a fresh head, never a fresh
encoder. Whatever transformers cannot load becomes one :class:`ModelSourceError` line naming the model and the fix,
instead of its own message or a traceback.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import transformers
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

# BEST_DIR, BASELINE_FILE and baseline_folder are re-exported: the modules that name model folders import them here.
from hf_indosent.modeling.aspects import TASK_KEY, aspect_config, check_aspect_config
from hf_indosent.modeling.folders import BASELINE_FILE as BASELINE_FILE
from hf_indosent.modeling.folders import BEST_DIR as BEST_DIR
from hf_indosent.modeling.folders import ModelSourceError, resolve_model_path, resolve_model_source, short_reason
from hf_indosent.modeling.folders import baseline_folder as baseline_folder

logger = logging.getLogger(__name__)

ADAPT_FILE = "adapt.json"
"""What ``hf-indosent adapt`` writes into an adapted model folder: its source model, data, settings and losses."""


def adaptation_stages(model_name_or_path: str) -> list[dict[str, Any]]:
    """Every ``hf-indosent adapt`` stage behind a local model folder, oldest first (``[]`` for any other model).

    Adapting an adapted folder further keeps the earlier stages' records, so the first stage's source stays the
    real base model and the epochs add up."""
    path = Path(model_name_or_path) / ADAPT_FILE
    if not path.is_file():
        return []
    record = json.loads(path.read_text(encoding="utf-8"))
    return [*record.get("earlier", []), {key: value for key, value in record.items() if key != "earlier"}]


def stage_epochs(stage: dict[str, Any]) -> float:
    """Epochs one adaptation stage ran: a stage stopped part-way (Ctrl-C) counts its last epoch's done fraction."""
    ran = max(len(stage.get("epochs") or []) - 1, 0)
    stopped = stage.get("stopped")
    if not stopped or stopped["step"] >= stopped["steps_in_epoch"]:
        return ran
    return round(ran - 1 + stopped["step"] / stopped["steps_in_epoch"], 2)


def adaptation_of(model_name_or_path: str) -> dict[str, Any] | None:
    """How a local model folder was adapted (``hf-indosent adapt``, over all its stages): source model, epochs,
    held-out masked-LM loss before and after, words added to the vocabulary (if any); ``None`` for any other model.
    Training records it, so the model card names the real base."""
    stages = adaptation_stages(model_name_or_path)
    if not stages:
        return None
    first, last = stages[0].get("epochs") or [], stages[-1].get("epochs") or []
    adapted = {
        "source_model": stages[0].get("source_model"),
        "epochs": sum(stage_epochs(stage) for stage in stages),
        "validation_mlm_loss": [first[0]["validation_mlm_loss"], last[-1]["validation_mlm_loss"]]
        if first and last
        else None,
    }
    added = sum((stage.get("vocabulary") or {}).get("added_words", 0) for stage in stages)
    return adapted | {"added_words": added} if added else adapted


# --------------------------------------------------------------------------------------------------------------
# Loading, checked

TRAINED_CLASSIFIER = "use a training run's output_dir or its best/ folder, as training saved it"
FROM_ONE_SAVE = "its weights and config.json are not of one model: " + TRAINED_CLASSIFIER
LOCAL_FIX = (
    "a model is a config.json, weights and tokenizer files saved together by save_pretrained, as training saves "
    "best/; re-save the model that way"
)
HUB_FIX = "check the Hub id and --revision, and the network (offline, only models already in the cache load)"
LOADING_LOGGER, LOAD_REPORT = "transformers.modeling_utils", "log_state_dict_report"
"""Where transformers logs its load report, the table of missing and misshapen weights that is refused here (should
the function be renamed, the report shows again, and the refusal still comes)."""


def _named(keys: Collection[str], shown: int = 3) -> str:
    names = sorted(keys)
    listed = ", ".join(names[:shown])
    return listed if len(names) <= shown else f"{listed} and {len(names) - shown} more"


def _model_name(model: str | os.PathLike) -> str:
    return f"model folder {os.fspath(model)}" if Path(model).is_dir() else f"model {os.fspath(model)!r}"


@contextmanager
def transformers_errors(model: str | os.PathLike) -> Iterator[None]:
    """What transformers (and the tokenizers, safetensors, torch.load beneath it) raise while loading ``model``: a bad
    config.json, an unknown model_type, unreadable weights or tokenizer files, a Hub id it cannot fetch. Each becomes
    one ModelSourceError line naming the model and the fix (``--debug`` shows the original below it).

    Passed through as they are: this package's own errors (a refusal, a stop signal) and a missing package, whose
    fix is to install it."""
    try:
        yield
    except ImportError:
        raise
    except Exception as err:
        if type(err).__module__.partition(".")[0] == __name__.partition(".")[0]:
            raise
        if "trust_remote_code" in str(err):
            raise ModelSourceError(
                f"{_model_name(model)} needs its own Python code to load (trust_remote_code), which hf_indosent never "
                "runs: use a model of an architecture transformers has built in (BERT, RoBERTa, ...)"
            ) from err
        local = Path(model).is_dir()
        raise ModelSourceError(
            f"{_model_name(model)}: transformers {transformers.__version__} cannot load it "
            f"({type(err).__name__}: {short_reason(err)}): {LOCAL_FIX if local else HUB_FIX}"
        ) from err


def _not_the_load_report(record: logging.LogRecord) -> bool:
    return record.funcName != LOAD_REPORT


@contextmanager
def quiet_load_report() -> Iterator[None]:
    """Keep transformers' multi-line load report off the terminal: what it lists is refused in one line instead (or,
    for a head to fine-tune, logged in one line).

    A filter, not a level: transformers runs extra checks (and warns) when its loading logger's level is raised."""
    loading = logging.getLogger(LOADING_LOGGER)
    loading.addFilter(_not_the_load_report)
    try:
        yield
    finally:
        loading.removeFilter(_not_the_load_report)


def load_config(model: str | os.PathLike, revision: str | None = None, **kwargs: Any) -> PretrainedConfig:
    with transformers_errors(model):
        return AutoConfig.from_pretrained(
            resolve_model_path(os.fspath(model)), revision=revision, trust_remote_code=False, **kwargs
        )


def label_names_of(model: str, revision: str | None = None) -> list[str]:
    """The model's label names in id order; refuse generic ``LABEL_0`` names, which mean the head was never named."""
    config = load_config(model, revision)
    names = [config.id2label[index] for index in range(config.num_labels)]
    generic = {f"LABEL_{index}" for index in range(config.num_labels)}
    if set(names) == generic:
        raise ValueError(
            f"model {model!r} has no label names (id2label is {names}): it is not a fine-tuned classifier saved by "
            "hf-indosent. Use a training run's best/ folder (or a Hub model whose config.json has id2label)."
        )
    return names


def load_tokenizer(model_name_or_path: str, revision: str | None = None) -> PreTrainedTokenizerBase:
    with transformers_errors(model_name_or_path):
        return AutoTokenizer.from_pretrained(
            resolve_model_path(model_name_or_path), revision=revision, use_fast=True, trust_remote_code=False
        )


def _loaded_with_info(model: str, revision: str | None, **kwargs: Any) -> tuple[PreTrainedModel, dict[str, Any]]:
    """``from_pretrained`` with its loading info. Sizes that do not match are loaded as fresh layers and listed in
    ``mismatched_keys`` (with both shapes) rather than raised: the callers refuse them by name, and transformers' own
    error only points at a report."""
    with transformers_errors(model):
        return AutoModelForSequenceClassification.from_pretrained(
            model,
            revision=revision,
            output_loading_info=True,
            ignore_mismatched_sizes=True,
            trust_remote_code=False,
            **kwargs,
        )


def _misshapen(mismatched: Collection[tuple[str, Any, Any]], shown: int = 2) -> str:
    listed = sorted(mismatched)
    examples = ", ".join(
        f"{key} {list(found)} in the weights, {list(wanted)} by config.json" for key, found, wanted in listed[:shown]
    )
    return f"{len(listed)} of its tensors have another shape than its config.json gives them ({examples})"


def weight_problems(info: dict[str, Any], base_prefix: str) -> tuple[list[str], bool]:
    """What ``from_pretrained``'s loading ``info`` says the weights did not give a trained classifier, and whether
    the classification head is all that is missing (the weights of a base model, not of a fine-tuned one)."""
    missing, unexpected = set(info["missing_keys"]), set(info["unexpected_keys"])
    head_only = bool(missing) and not any(key.startswith(f"{base_prefix}.") for key in missing)
    problems = []
    if missing:
        problems.append(f"its weights lack {_named(missing)}{' (the classification head)' if head_only else ''}")
    if info["mismatched_keys"]:
        problems.append(_misshapen(info["mismatched_keys"]))
    if unexpected:
        problems.append(f"its weights hold {_named(unexpected)}, which its config.json has no place for")
    return problems, head_only and len(problems) == 1


def load_classifier(model: str | os.PathLike, revision: str | None = None, **kwargs: Any) -> PreTrainedModel:
    """A trained sequence classifier, every parameter from its weights with the shape its config gives it.

    A head missing from the weights, tensors of other shapes (another model's weights, another number of labels),
    a config of another architecture or size over the weights: each is refused as a ModelSourceError naming what does
    not match, never answered with freshly initialised layers. ``kwargs`` go to ``from_pretrained``.
    """
    source = resolve_model_source(model)
    with quiet_load_report():
        classifier, info = _loaded_with_info(source, revision, **kwargs)
    problems, base_model = weight_problems(info, classifier.base_model_prefix)
    try:
        check_aspect_config(classifier.config)
    except ValueError as err:
        problems.append(str(err))
    if problems:
        why = f"it is not a fine-tuned classifier; {TRAINED_CLASSIFIER}" if base_model else FROM_ONE_SAVE
        raise ModelSourceError(f"{_model_name(source)}: {'; '.join(problems)}: {why}")
    return classifier


def load_model(
    model_name_or_path: str,
    label_names: Sequence[str],
    revision: str | None = None,
    attn_implementation: str | None = "sdpa",
    aspects: Sequence[str] = (),
    task: str | None = None,
) -> PreTrainedModel:
    """A sequence classifier with a fresh head sized for ``label_names`` (an existing head is reused if it fits);
    with ``aspects``, one head per aspect over ``label_names``, stacked (see :mod:`hf_indosent.modeling.aspects`).

    Only the head (and a pooler, which masked-LM checkpoints lack) may start fresh: an encoder tensor missing from
    the weights, or of another shape, means they are not this model's, and fine-tuning them would start from noise.
    """
    source = resolve_model_path(model_name_or_path)
    config = load_config(source, revision)
    # set after loading: from_pretrained drops keys a config class does not declare (aspects, the task)
    config.update({**aspect_config(aspects, label_names), **({TASK_KEY: task} if task else {})})
    with quiet_load_report():
        model, info = _loaded_with_info(source, revision, config=config, attn_implementation=attn_implementation)
    prefix = f"{model.base_model_prefix}."
    encoder = [key for key in model.state_dict() if key.startswith(prefix) and "pooler" not in key.split(".")]
    fresh = set(info["missing_keys"]) | {key for key, *_ in info["mismatched_keys"]}
    unloaded = fresh.intersection(encoder)
    if unloaded:
        raise ModelSourceError(
            f"{_model_name(source)}: {len(unloaded)} of the {len(encoder)} encoder tensors its config.json describes "
            f"are missing from its weights or have another shape there ({_named(unloaded)}): they are not this "
            "model's weights; fine-tune a model saved with save_pretrained, a Hub model or a packaged one"
        )
    if fresh:
        logger.info("%s: %s start fresh, to be trained", _model_name(source), _named(fresh, shown=4))
    return model


def max_positions(model: PreTrainedModel) -> int | None:
    """The longest input the model's position embeddings allow, if it declares one."""
    return getattr(model.config, "max_position_embeddings", None)
