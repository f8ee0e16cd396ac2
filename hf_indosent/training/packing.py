"""Padding-free training steps for BERT classifiers: the whole shuffled batch as one row of real tokens.

Why: on a CPU every padded position is computed like a real one, and the other cure, cutting each batch into
length-sorted micro-batches (:class:`~hf_indosent.training.step.MicroBatchCollator`), runs many small matmuls that
reach a fraction of the CPU's matmul peak. Packing concatenates the batch's texts into one sequence, so the embeddings
and every linear layer (most of BERT's FLOPs at SmSA's lengths) run once, on exactly the real tokens, in large
matmuls. Only the attention must stay within each text: it is computed per group of texts of similar length, each
group padded to its own longest (the registered attention function :func:`packed_attention`). The optimizer sees the
same shuffled batch, and the logits are those of the padded model (tested). The packed forward also draws its dropout
masks from NumPy's PCG64 (:class:`DropoutMasks`), faster than torch's CPU dropout.

Why not transformers' own padding-free path (``DataCollatorWithFlattening``: one row, ``position_ids`` restarting per
text): in 5.25 it is correct for BERT with sdpa (the mask builder makes a block-diagonal mask), but that mask spans the
whole row, so the attention computes every text against every other, and flex_attention has no backward on a CPU;
``benchmarks/packing.py`` measures it against this path (docs/performance.md, "Packed batches": the figures and the
decision).

The contract this module keeps with transformers, checked before a run packs (:func:`packing_unavailable` for the
launch, :func:`unfit_for_packing` for the installed version and the loaded model, both in
:func:`hf_indosent.training.setup.setup`): where it fails, the run trains with micro-batches, said in one warning line
(``--packing true`` is refused instead, before an old run is replaced); never a failure mid-run:

- public APIs only: the attention goes through the attention registry (``AttentionInterface``) and
  ``model.set_attn_implementation``, switched only around the packed forward and back after it (never saved), and the
  dropout masks through forward hooks on the ``nn.Dropout`` modules; nothing is written to the model or its config
  outside those calls (the current implementation is read from ``config._attn_implementation``, which has no public
  reader in 5.25);
- the model's structure (:func:`check_structure`): the BERT layout the packed forward calls into;
- a self-test (:func:`self_test`): the packed forward of two texts equals the padded forward;
- the transformers versions the tests ran on (:data:`TESTED_TRANSFORMERS`): outside them packing stays off, since a
  new release may change what the self-test does not see (training-mode dropout, the attention's arguments).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from transformers import AttentionInterface, BertForSequenceClassification, BertModel, PretrainedConfig
from transformers.models.bert.modeling_bert import BertPooler, BertSelfAttention

PACKED_ATTENTION = "hf_indosent_packed"
ATTENTION_GROUPS = 8
"""Groups of texts of similar length whose attention is padded together (4 texts each in a batch of 32): fewer groups
pad more, more groups run more small matmuls (measured in docs/performance.md, "Packed batches")."""
TESTED_TRANSFORMERS = SpecifierSet(">=5.25,<5.26")
"""The transformers releases tests/test_packing.py ran on (the packed forward calls into BERT's modules and the
attention registry): outside them a run falls back to micro-batches. Widen it only after running those tests."""
SELF_TEST_TOLERANCE = 1e-4
"""Largest difference of encoder states and logits (fp32) the launch self-test accepts between the packed and the
padded forward; a correct packed forward differs by rounding only (about 1e-6)."""


def packing_unavailable(config: PretrainedConfig, num_processes: int) -> str | None:
    """Why packing cannot train the model of ``config`` in this launch (said to the user), or None when it can.
    (``--torch_compile`` is the arguments' own clash: refused with ``--packing true``, and auto then stays off.)"""
    if num_processes > 1:
        return "packing runs the model's layers outside the distributed wrapper, so it needs a single process"
    if config.model_type != "bert" or getattr(config, "is_decoder", False):
        return f"packing knows BERT encoders only, and this model is a {config.model_type!r} model"
    return None


def untested_transformers() -> str | None:
    """Why the installed transformers is not one packing was tested with (:data:`TESTED_TRANSFORMERS`), or None."""
    if TESTED_TRANSFORMERS.contains(Version(transformers.__version__), prereleases=True):
        return None
    return f"packing was tested with transformers {TESTED_TRANSFORMERS}, and this is {transformers.__version__}"


def check_structure(model: torch.nn.Module) -> str | None:
    """Why the packed forward cannot serve ``model`` (one line), or None: it calls BERT's encoder with its own
    attention, then each text's [CLS] through the pooler, dropout and classifier, so it needs exactly that layout."""
    config = getattr(model, "config", None)
    if not isinstance(model, BertForSequenceClassification) or getattr(config, "model_type", None) != "bert":
        return f"packing knows BERT sequence classifiers only, and this model is a {type(model).__name__}"
    if config.is_decoder or config.add_cross_attention:
        return "packing knows bidirectional BERT encoders only, and this one is a decoder or has cross-attention"
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        return f"packing needs absolute position embeddings, and this model has {config.position_embedding_type!r}"
    bert = getattr(model, "bert", None)
    if not isinstance(bert, BertModel) or not isinstance(getattr(bert, "pooler", None), BertPooler):
        return "packing needs the classifier's BERT encoder with its pooler, and this model has none"
    if not isinstance(getattr(model, "dropout", None), torch.nn.Dropout):
        return "packing needs the classifier's dropout layer, and this model has none"
    if not isinstance(getattr(model, "classifier", None), torch.nn.Linear):
        return "packing needs a linear classifier layer on the pooled [CLS], and this model has another head"
    layers = [getattr(layer.attention, "self", None) for layer in bert.encoder.layer]
    if not layers or not all(type(attention) is BertSelfAttention for attention in layers):
        return "packing needs BERT's own self-attention in every layer (it computes attention through the registry)"
    return None


def self_test(model: BertForSequenceClassification) -> str | None:
    """Why the packed forward does not give the padded forward's encoder states and logits on two texts of different
    lengths (one line), or None when it does: eval mode, fp32, no gradients. The encoder states are compared too: a
    fresh classifier head's logits are too small to show a wrong attention. Draws nothing from torch's generator and
    leaves the model's mode and attention as they were."""
    device = next(model.parameters()).device
    lengths, vocab = (9, 5), model.config.vocab_size
    ids = [[(7 * index + 3 * length) % vocab for index in range(length)] for length in lengths]
    features = [{"input_ids": row, "token_type_ids": [0] * len(row), "labels": 0} for row in ids]
    padded = torch.full((len(ids), max(lengths)), model.config.pad_token_id or 0, dtype=torch.long)
    mask = torch.zeros_like(padded)
    for row, text in enumerate(ids):
        padded[row, : len(text)] = torch.tensor(text)
        mask[row, : len(text)] = 1
    batch = PackedCollator(groups=1)(features)  # one group: the shorter text's padding keys are masked
    packed = {key: value.to(device) if torch.is_tensor(value) else value for key, value in batch["packed"].items()}
    # the encoder's states, by a forward hook: padded [texts, longest, hidden], then packed [1, tokens, hidden]
    encoded: list[torch.Tensor] = []
    hook = model.bert.register_forward_hook(lambda module, args, output: encoded.append(output[0].float()))
    training = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.autocast(device.type, enabled=False):
            expected = model(input_ids=padded.to(device), attention_mask=mask.to(device)).logits.float()
            logits = packed_logits(model, packed)[batch["restore"].to(device)].float()
    except Exception as err:  # any failure of the packed forward is a reason to fall back, not to stop the launch
        return f"the packed forward failed its self-test ({type(err).__name__}: {str(err).splitlines()[0][:200]})"
    finally:
        hook.remove()
        model.train(training)
    starts = batch["packed"]["starts"][batch["restore"]].tolist()
    differences = [(logits - expected).abs().max().item()]
    for row, (start, length) in enumerate(zip(starts, lengths, strict=True)):
        differences.append((encoded[1][0, start : start + length] - encoded[0][row, :length]).abs().max().item())
    if not max(differences) <= SELF_TEST_TOLERANCE:  # also NaN
        return f"the packed forward differs from the padded forward by {max(differences):.2g} in its self-test"
    return None


def unfit_for_packing(model: torch.nn.Module) -> str | None:
    """Why a run cannot pack the loaded ``model`` (one line for a warning), or None: :func:`untested_transformers`,
    :func:`check_structure`, then :func:`self_test`. Run once at launch, before the first step."""
    return untested_transformers() or check_structure(model) or self_test(model)


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
    faster than SDPA's kernel, whose backward dominated it); the outputs are gathered back to the packed order. One
    scatter and one gather per tensor, not one per group: a slice's backward fills a gradient of the whole input with
    zeros.
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
    on one thread (MKL's vectorised path is taken on Intel CPUs only); raw PCG64 words come several times faster
    (docs/performance.md has the figures). Same semantics as ``F.dropout`` in training: each element is zeroed
    independently with probability ``p`` (to 16 bits) and the rest scaled by ``1 / (1 - p)``; the gradient passes
    through the same mask.
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
        # bool masks ran several times slower than on a mask of the states' own type)
        return _MaskedScale.apply(states, keep, KEEP_LEVELS / (KEEP_LEVELS - threshold))


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
    """Every ``nn.Dropout`` of ``model`` in training mode draws from ``masks`` in the block: the module is put in eval
    mode (torch's dropout then passes its input through, drawing nothing) and a forward hook applies the mask with the
    module's ``p``; the hooks are removed and training mode restored after."""
    modules = [module for module in model.modules() if isinstance(module, torch.nn.Dropout) and module.training]
    handles = []
    try:
        for module in modules:
            module.eval()
            handles.append(module.register_forward_hook(lambda module, args, output: masks.apply(output, module.p)))
        yield
    finally:
        for handle in handles:
            handle.remove()
        for module in modules:
            module.train()


@contextlib.contextmanager
def _attention(model: BertForSequenceClassification, implementation: str) -> Iterator[None]:
    """The model computes attention with the registered ``implementation`` in the block (the public
    ``set_attn_implementation``, which checks the name is registered), and with its own again after it."""
    previous = model.config._attn_implementation  # read only: transformers 5.25 has no public reader
    model.set_attn_implementation(implementation)
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


def packed_logits(model: BertForSequenceClassification, packed: dict[str, Any]) -> torch.Tensor:
    """The classifier's logits for a :class:`PackedCollator` batch, in sorted order (as the padded model gives them).

    ``model`` is the bare model (not a distributed wrapper) and passed :func:`unfit_for_packing`; the caller provides
    autocast. In training, dropout draws its masks from a :class:`DropoutMasks` seeded from torch's generator.
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
