"""Padding-free training steps for BERT classifiers: the whole shuffled batch as one row of real tokens.

Why: on a CPU every padded position is computed like a real one, and the other cure, cutting each batch into
length-sorted micro-batches (:class:`~hf_indosent.steps.MicroBatchCollator`), runs many small matmuls that reach a
fraction of the CPU's matmul peak. Packing concatenates the batch's texts into one sequence, so the embeddings and every
linear layer (most of BERT's FLOPs at SmSA's lengths) run once, on exactly the real tokens, in large matmuls. Only the
attention must stay within each text: it is computed per group of texts of similar length, each group padded to its
own longest (the registered attention function :func:`packed_attention`). The optimizer sees the same shuffled batch,
and the logits are those of the padded model (tested).

Used for training on one CPU process (:func:`packing_unavailable` says when not); evaluation and saved models are
untouched: the attention implementation is switched only around the packed forward, never saved.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AttentionInterface, BertForSequenceClassification, PretrainedConfig

PACKED_ATTENTION = "hf_indosent_packed"
ATTENTION_GROUPS = 8
"""Groups of texts of similar length whose attention is padded together (4 texts each in a batch of 32): on SmSA
batches on a 2-core CPU, 1 / 4 / 8 groups ran MiniLM's bf16 forward, backward and Adam step at 42 / 44 / 45 samples/s
(dropout off). In the training loop, dropout on (1,000 rows, 1 epoch): 8 / 16 / 32 groups gave 30.4-31.4 / 31.3 /
28.0 samples/s: 32 (one text per group) runs too many small matmuls."""


def packing_unavailable(config: PretrainedConfig, num_processes: int) -> str | None:
    """Why packing cannot train the model of ``config`` in this launch (said to the user), or None when it can.
    (``--torch_compile`` is the arguments' own clash: refused with ``--packing true``, and auto then stays off.)"""
    if num_processes > 1:
        return "packing runs the model's layers outside the distributed wrapper, so it needs a single process"
    if config.model_type != "bert" or getattr(config, "is_decoder", False):
        return f"packing knows BERT encoders only, and this model is a {config.model_type!r} model"
    return None


class PackedCollator:
    """Collates a training batch as one packed sequence: its texts sorted by length and concatenated.

    Returns ``{"packed": model inputs and attention groups, "labels": labels in batch order, "restore": index}``;
    the logits come out in sorted order and ``logits[restore]`` puts them back into batch order.
    """

    def __init__(self, groups: int = ATTENTION_GROUPS) -> None:
        if groups < 1:
            raise ValueError(f"groups={groups} must be at least 1")
        self.groups = groups

    def __call__(self, features: list[dict]) -> dict[str, Any]:
        lengths = np.array([len(feature["input_ids"]) for feature in features])
        order = np.argsort(lengths, kind="stable")
        ends = np.cumsum(lengths[order])
        starts = ends - lengths[order]

        def joined(key: str) -> torch.Tensor:
            return torch.tensor(np.concatenate([np.asarray(features[i][key]) for i in order]), dtype=torch.long)[None]

        input_ids = joined("input_ids")
        has_types = "token_type_ids" in features[0]
        groups = []
        for part in np.array_split(np.arange(len(order)), min(self.groups, len(order))):
            part_lengths = torch.from_numpy(lengths[order[part]])
            width = int(part_lengths.max())
            valid = torch.arange(width)[None, :] < part_lengths[:, None]
            groups.append(
                {
                    "start": int(starts[part[0]]),
                    "stop": int(ends[part[-1]]),
                    "rows": len(part),
                    "width": width,
                    "index": valid.flatten().nonzero().squeeze(1),  # real tokens' places in the padded group
                    "padding": ~valid[:, None, None, :],  # keys to ignore
                }
            )
        restore = torch.empty(len(order), dtype=torch.long)
        restore[torch.from_numpy(order)] = torch.arange(len(order))
        labels = torch.tensor([feature["labels"] for feature in features], dtype=torch.long)
        return {
            "packed": {
                "input_ids": input_ids,
                "token_type_ids": joined("token_type_ids") if has_types else torch.zeros_like(input_ids),
                "position_ids": torch.from_numpy(np.concatenate([np.arange(n) for n in lengths[order]]))[None],
                "starts": torch.from_numpy(starts),
                "groups": groups,
            },
            "labels": labels,
            "sorted_labels": labels[torch.from_numpy(order)],
            "restore": restore,
        }


def packed_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    packing_groups: list[dict[str, Any]] | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention within each packed text: ``query``/``key``/``value`` are ``[1, heads, tokens, head_dim]``.

    Each group of texts is scattered into a zero-padded ``[rows, heads, width, head_dim]`` block, attends with its
    padding keys masked (eager softmax attention: on a CPU in bf16 it ran the step faster than SDPA's flash kernel,
    whose backward dominated it, measured with dropout off), and is gathered back to the packed order.
    """
    if packing_groups is None:
        raise RuntimeError(f"attention {PACKED_ATTENTION!r} runs only inside hf_indosent.packing.packed_logits")
    outputs = []
    for group in packing_groups:
        rows, width, index = group["rows"], group["width"], group["index"]
        scores = torch.matmul(_padded(query, group), _padded(key, group).transpose(-1, -2)) * scaling
        scores = scores.masked_fill(group["padding"], torch.finfo(scores.dtype).min)
        probs = F.dropout(torch.softmax(scores, dim=-1), p=dropout, training=module.training)
        context = torch.matmul(probs, _padded(value, group)).transpose(1, 2)
        outputs.append(context.reshape(rows * width, *context.shape[2:])[index])
    return torch.cat(outputs)[None], None


def _padded(states: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
    """``[1, heads, tokens, head_dim]`` -> the group's texts as ``[rows, heads, width, head_dim]``, zero-padded."""
    tokens = states[0, :, group["start"] : group["stop"]].transpose(0, 1)  # [tokens, heads, head_dim]
    block = tokens.new_zeros(group["rows"] * group["width"], *tokens.shape[1:])  # zeros: padded values must not be NaN
    block[group["index"]] = tokens
    return block.view(group["rows"], group["width"], *tokens.shape[1:]).transpose(1, 2)


AttentionInterface.register(PACKED_ATTENTION, packed_attention)


@contextlib.contextmanager
def _attention(model: torch.nn.Module, implementation: str) -> Iterator[None]:
    previous = model.config._attn_implementation
    model.config._attn_implementation = implementation
    try:
        yield
    finally:
        model.config._attn_implementation = previous


def packed_logits(model: BertForSequenceClassification, packed: dict[str, Any]) -> torch.Tensor:
    """The classifier's logits for a :class:`PackedCollator` batch, in sorted order (as the padded model gives them).

    ``model`` is the bare model (not a distributed wrapper); the caller provides autocast.
    """
    with _attention(model, PACKED_ATTENTION):
        states = model.bert(
            input_ids=packed["input_ids"],
            token_type_ids=packed["token_type_ids"],
            position_ids=packed["position_ids"],
            packing_groups=packed["groups"],
        ).last_hidden_state[0]
    first_tokens = states[packed["starts"]][:, None, :]  # each text's [CLS], as the pooler expects [rows, 1, hidden]
    return model.classifier(model.dropout(model.bert.pooler(first_tokens)))
