"""Padding-free training steps for BERT classifiers: the whole shuffled batch as one row of real tokens.

Why: on a CPU every padded position is computed like a real one, and the other cure, cutting each batch into
length-sorted micro-batches (:class:`~hf_indosent.training.step.MicroBatchCollator`), runs many small matmuls that
reach a
fraction of the CPU's matmul peak. Packing concatenates the batch's texts into one sequence, so the embeddings and every
linear layer (most of BERT's FLOPs at SmSA's lengths) run once, on exactly the real tokens, in large matmuls. Only the
attention must stay within each text: it is computed per group of texts of similar length, each group padded to its
own longest (the registered attention function :func:`packed_attention`). The optimizer sees the same shuffled batch,
and the logits are those of the padded model (tested).

The packed forward also draws its dropout masks from NumPy's PCG64 (:class:`DropoutMasks`): torch's CPU dropout draws
its Bernoulli numbers one at a time, and took 20% of a packed step on the 2-core AMD EPYC (12.7 ms per 2M elements,
against 2-4 ms here).

Used for training on one CPU process (:func:`packing_unavailable` says when not); evaluation and saved models are
untouched: the attention implementation and dropout are switched only around the packed forward, never saved.
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
        shapes, places, key_biases, offset = [], [], [], 0
        for part in np.array_split(np.arange(len(order)), min(self.groups, len(order))):
            part_lengths = torch.from_numpy(lengths[order[part]])
            width = int(part_lengths.max())
            valid = torch.arange(width)[None, :] < part_lengths[:, None]
            shapes.append((len(part), width))
            places.append(valid.flatten().nonzero().squeeze(1) + offset)  # its real tokens in the padded blocks
            key_biases.append(torch.zeros(valid.shape).masked_fill(~valid, -1e30)[:, None, None, :])  # padding keys
            offset += len(part) * width
        restore = torch.empty(len(order), dtype=torch.long)
        restore[torch.from_numpy(order)] = torch.arange(len(order))
        labels = torch.tensor([feature["labels"] for feature in features], dtype=torch.long)
        return {
            "packed": {
                "input_ids": input_ids,
                "token_type_ids": joined("token_type_ids") if has_types else torch.zeros_like(input_ids),
                "position_ids": torch.from_numpy(np.concatenate([np.arange(n) for n in lengths[order]]))[None],
                "starts": torch.from_numpy(starts),
                "layout": {"shapes": shapes, "index": torch.cat(places), "size": offset, "key_biases": key_biases},
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
    packing_layout: dict[str, Any] | None = None,
    dropout_masks: DropoutMasks | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention within each packed text: ``query``/``key``/``value`` are ``[1, heads, tokens, head_dim]``.

    The tokens are scattered once into zero-padded blocks, one ``[rows, heads, width, head_dim]`` block per group of
    texts, which attend with their padding keys masked (eager softmax attention: on a CPU in bf16 it ran the step
    faster than SDPA's flash kernel, whose backward dominated it, measured with dropout off); the outputs are gathered
    back to the packed order. One scatter and one gather per tensor, not one per group: a slice's backward fills a
    gradient of the whole input with zeros.
    """
    if packing_layout is None:
        raise RuntimeError(
            f"attention {PACKED_ATTENTION!r} runs only inside hf_indosent.training.packing.packed_logits"
        )
    shapes, biases = packing_layout["shapes"], packing_layout["key_biases"]
    blocks = [_padded(states, packing_layout) for states in (query * scaling, key, value)]
    outputs = []
    for (rows, width), bias, q, k, v in zip(shapes, biases, *blocks, strict=True):
        scores = torch.matmul(q, k.transpose(-1, -2)) + bias.to(q.dtype)  # added, not masked_fill: faster both ways
        probs = torch.softmax(scores, dim=-1)
        if module.training and dropout > 0:
            probs = dropout_masks.apply(probs, dropout) if dropout_masks else F.dropout(probs, p=dropout)
        outputs.append(torch.matmul(probs, v).transpose(1, 2).reshape(rows * width, *v.shape[1::2]))
    return torch.cat(outputs)[packing_layout["index"]][None], None


def _padded(states: torch.Tensor, layout: dict[str, Any]) -> list[torch.Tensor]:
    """``[1, heads, tokens, head_dim]`` -> each group's texts as ``[rows, heads, width, head_dim]``, zero-padded."""
    tokens = states[0].transpose(0, 1)  # [tokens, heads, head_dim]
    padded = tokens.new_zeros(layout["size"], *tokens.shape[1:])  # zeros: padded values must not be NaN
    padded[layout["index"]] = tokens
    parts = padded.split([rows * width for rows, width in layout["shapes"]])
    return [
        part.view(rows, width, *tokens.shape[1:]).transpose(1, 2)
        for part, (rows, width) in zip(parts, layout["shapes"], strict=True)
    ]


AttentionInterface.register(PACKED_ATTENTION, packed_attention)

KEEP_LEVELS = 65536
"""Dropout masks compare uniform 16-bit numbers with ``round(p * 65536)``: the drop probability is within 8e-6 of
``p``, and kept values are scaled by the exact inverse of the keep probability, so their expectation is unchanged."""


class DropoutMasks:
    """Dropout whose masks come from NumPy's PCG64 raw 64-bit words, four 16-bit uniform numbers each.

    Why: torch's CPU ``bernoulli_`` (behind ``F.dropout``) draws one number per element from its Mersenne Twister
    on one thread (MKL's vectorised path is taken on Intel CPUs only); raw PCG64 words come at about 0.6 ns per
    element (measured here). Same semantics as ``F.dropout`` in training: each element is zeroed independently with
    probability ``p`` (to 16 bits) and the rest scaled by ``1 / (1 - p)``; the gradient passes through the same mask.
    ``seed`` is drawn from torch's generator per packed forward, so ``--seed`` and checkpointed RNG states keep runs
    reproducible.
    """

    def __init__(self, seed: int) -> None:
        self.bits = np.random.PCG64(seed)

    def apply(self, states: torch.Tensor, p: float) -> torch.Tensor:
        """``states`` with dropout ``p`` (0 <= p <= 1) applied; off the CPU, by torch's own dropout (fast there)."""
        if states.device.type != "cpu":
            return F.dropout(states, p=p)
        threshold = round(p * KEEP_LEVELS)
        if threshold == 0:
            return states
        if threshold == KEEP_LEVELS:
            return states * 0.0
        count = states.numel()
        words = torch.from_numpy(self.bits.random_raw((count + 3) // 4).view(np.int16)[:count]).view(states.shape)
        cut = threshold - KEEP_LEVELS // 2  # int16 words below it are dropped: `threshold` of 65536 values
        keep = words.clamp(cut - 1, cut).sub_(cut - 1).to(states.dtype)  # 1 kept, 0 dropped (no bool: bf16 ops on
        # bool masks ran 4-7x slower than on a mask of the states' own type)
        return _MaskedScale.apply(states, keep, KEEP_LEVELS / (KEEP_LEVELS - threshold))

    def module_forward(self, module: torch.nn.Dropout) -> Any:
        """A ``forward`` for the ``nn.Dropout`` ``module`` that draws its masks here."""

        def forward(states: torch.Tensor) -> torch.Tensor:
            return self.apply(states, module.p) if module.training else states

        return forward


class _MaskedScale(torch.autograd.Function):
    """``states * keep * scale``; the gradient passes through the same ``keep`` mask (0 or 1) and ``scale``."""

    @staticmethod
    def forward(ctx: Any, states: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return (states * keep).mul_(scale)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (keep,) = ctx.saved_tensors
        return (grad * keep).mul_(ctx.scale), None, None


@contextlib.contextmanager
def _dropout(model: torch.nn.Module, masks: DropoutMasks) -> Iterator[None]:
    """Every ``nn.Dropout`` of ``model`` draws from ``masks`` in the block (an instance ``forward``, removed after)."""
    modules = [module for module in model.modules() if isinstance(module, torch.nn.Dropout)]
    for module in modules:
        module.forward = masks.module_forward(module)
    try:
        yield
    finally:
        for module in modules:
            del module.forward


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

    ``model`` is the bare model (not a distributed wrapper); the caller provides autocast. In training, dropout draws
    its masks from a :class:`DropoutMasks` seeded from torch's generator.
    """
    masks = DropoutMasks(int(torch.randint(0, 2**63 - 1, ()).item())) if model.training else None  # eval: no draw
    with _attention(model, PACKED_ATTENTION), _dropout(model, masks) if masks else contextlib.nullcontext():
        states = model.bert(
            input_ids=packed["input_ids"],
            token_type_ids=packed["token_type_ids"],
            position_ids=packed["position_ids"],
            packing_layout=packed["layout"],
            dropout_masks=masks,
        ).last_hidden_state[0]
        first_tokens = states[packed["starts"]][:, None, :]  # each text's [CLS]; the pooler expects [rows, 1, hidden]
        return model.classifier(model.dropout(model.bert.pooler(first_tokens)))
