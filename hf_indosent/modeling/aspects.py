"""Aspect-based sentiment (CASA, HoASA) as an ordinary sequence classifier: one head per aspect, stacked.

IndoNLU's ``BertForMultiLabelClassification`` puts one ``Linear(hidden, L)`` per aspect over the same dropped-out
pooled output. Stacking those A heads gives one ``Linear(hidden, A * L)`` whose rows ``a * L : (a + 1) * L`` are
aspect ``a``'s head: the same model (same outputs, same gradients, each head its own weights), but a stock
``BertForSequenceClassification``. So an aspect model is a plain ``save_pretrained`` folder that
``AutoModelForSequenceClassification.from_pretrained`` loads in any process with no custom code and no
``trust_remote_code``, and that every backend (ONNX, int8, bf16) runs unchanged. Its ``config.json`` says how to read
the logits:

* ``aspects``: the aspect names in head order (IndoNLU's order);
* ``aspect_labels``: the label names of every aspect, in id order;
* ``id2label``: ``"aspect:label"`` for each of the A * L outputs, aspect-major.

What differs from a single-label classifier is only how the logits are read: a softmax per aspect (the
``(batch, A, L)`` view), and a loss that is the sum of the per-aspect cross-entropies (training flattens each
(text, aspect) pair into one row; see :func:`flatten`). A plain ``pipeline("text-classification")`` softmaxes all A * L
outputs together, which is meaningless here: use ``function_to_apply="none"`` and :func:`aspect_scores`, or
hf_indosent's predictor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

ASPECTS_KEY = "aspects"
"""config.json key: aspect names in head order; absent (or empty) for a single-label classifier."""

ASPECT_LABELS_KEY = "aspect_labels"
"""config.json key: every aspect's label names, in id order."""

TASK_KEY = "indonlu_task"
"""config.json key: the IndoNLU task a model was fine-tuned on (``smsa``, ``emot``, ``casa``, ``hoasa``), when it
was trained on one of them (not on the user's own files)."""

SEPARATOR = ":"
"""Between aspect and label in ``id2label`` (``"fuel:positive"``)."""


def task_of(config: Any) -> str | None:
    """The IndoNLU task a model's config records (see :data:`TASK_KEY`), or ``None``."""
    return getattr(config, TASK_KEY, None)


def aspects_of(config: Any) -> tuple[str, ...]:
    """The aspect names a model's config declares; empty for a single-label classifier."""
    return tuple(getattr(config, ASPECTS_KEY, None) or ())


def aspect_label_names(config: Any) -> tuple[str, ...]:
    """The label names each aspect's head predicts (id order); a single-label model's own labels otherwise."""
    if aspects_of(config):
        return tuple(getattr(config, ASPECT_LABELS_KEY))
    return tuple(config.id2label[index] for index in range(config.num_labels))


def flat_label_names(aspects: Sequence[str], label_names: Sequence[str]) -> list[str]:
    """``id2label`` values of the stacked heads: ``aspect:label``, aspect-major."""
    return [f"{aspect}{SEPARATOR}{label}" for aspect in aspects for label in label_names]


def aspect_config(aspects: Sequence[str], label_names: Sequence[str]) -> dict[str, Any]:
    """The config fields of a classifier for ``aspects`` (empty: single-label) x ``label_names``: ``num_labels``,
    ``id2label``/``label2id`` and, for aspects, the two keys that say how to read the logits."""
    names = flat_label_names(aspects, label_names) if aspects else list(label_names)
    id2label = dict(enumerate(names))
    fields: dict[str, Any] = {
        "num_labels": len(names),
        "id2label": id2label,
        "label2id": {name: index for index, name in id2label.items()},
    }
    if aspects:
        fields[ASPECTS_KEY] = list(aspects)
        fields[ASPECT_LABELS_KEY] = list(label_names)
    return fields


def check_aspect_config(config: Any) -> None:
    """Refuse a config whose aspect keys do not match its number of outputs (a hand-edited or foreign folder)."""
    aspects = aspects_of(config)
    if not aspects:
        return
    labels = getattr(config, ASPECT_LABELS_KEY, None) or ()
    if len(aspects) * len(labels) != config.num_labels:
        raise ValueError(
            f"config.json declares {len(aspects)} aspects x {len(labels)} labels but {config.num_labels} outputs: "
            f"{ASPECTS_KEY!r} and {ASPECT_LABELS_KEY!r} must multiply to num_labels; the folder was edited or is "
            "not an hf_indosent aspect model"
        )


def per_aspect(logits: torch.Tensor, num_aspects: int) -> torch.Tensor:
    """``(batch, A * L)`` logits as ``(batch, A, L)``: one row of logits per aspect."""
    return logits.reshape(logits.shape[0], num_aspects, logits.shape[-1] // num_aspects)


def flatten(logits: torch.Tensor, labels: torch.Tensor, num_aspects: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each (text, aspect) pair as one row: logits ``(batch * A, L)`` and labels ``(batch * A,)``.

    Cross-entropy summed over these rows is the sum of the per-aspect losses, and macro F1 over them is IndoNLU's
    flattened metric. With ``num_aspects`` 1 (a single-label model) the inputs come back as they are."""
    if num_aspects == 1:
        return logits, labels
    return per_aspect(logits, num_aspects).reshape(-1, logits.shape[-1] // num_aspects), labels.reshape(-1)


def aspect_scores(logits: torch.Tensor, num_aspects: int) -> torch.Tensor:
    """Probabilities per aspect, ``(batch, A, L)``: a softmax over each aspect's own labels."""
    return per_aspect(logits.float(), num_aspects).softmax(-1)


def predicted_ids(logits: torch.Tensor, num_aspects: int) -> torch.Tensor:
    """The predicted label id of each text ``(batch,)``, or of each (text, aspect) ``(batch, A)`` for aspects."""
    return logits.argmax(-1) if num_aspects == 1 else per_aspect(logits, num_aspects).argmax(-1)
