"""Model and tokenizer loading: `AutoModelForSequenceClassification` with label names from the dataset."""

from __future__ import annotations

from collections.abc import Sequence

from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

DEFAULT_MODEL = "indobenchmark/indobert-base-p1"


def label_maps(label_names: Sequence[str]) -> tuple[dict[int, str], dict[str, int]]:
    """``id2label`` / ``label2id`` so saved models and pipelines speak label names, never LABEL_0."""
    id2label = dict(enumerate(label_names))
    return id2label, {name: index for index, name in id2label.items()}


def load_tokenizer(model_name_or_path: str, revision: str | None = None) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(model_name_or_path, revision=revision, use_fast=True, trust_remote_code=False)


def load_model(
    model_name_or_path: str,
    label_names: Sequence[str],
    revision: str | None = None,
    attn_implementation: str | None = "sdpa",
) -> PreTrainedModel:
    """A sequence classifier with a fresh head sized for ``label_names`` (an existing head is reused if it fits)."""
    id2label, label2id = label_maps(label_names)
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
