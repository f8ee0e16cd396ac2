"""One optimizer step, in one place: length-sorted micro-batches, their forward/backward, and the epoch's sums.

:class:`MicroBatchCollator` cuts each shuffled batch into parts of similar length; :func:`forward_backward` runs the
parts and adds their gradients so the optimizer sees the whole batch; :class:`EpochTally` keeps the epoch's loss,
token counts and confusion counts on the device, and folds them into the checkpointed
:attr:`~hf_indosent.training.checkpoints.TrainState.epoch_sums`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator

from hf_indosent.core.shell import resume_command
from hf_indosent.modeling.aspects import flatten
from hf_indosent.training.checkpoints import TrainState
from hf_indosent.training.packing import packed_logits


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class MicroBatchCollator:
    """Collates a training batch as ``micro_batches`` parts of similar length, each padded only to its own longest.

    The batch is sorted by length and cut into nearly equal parts. The training loop runs the parts one after another
    and adds up their gradients before the single optimizer step, so the optimizer sees exactly the shuffled batch (as
    in the tutorial) while far fewer padded positions are computed. Building the batches themselves from texts of
    similar length (``group_by_length``) cuts padding further, but on SmSA length predicts the label (neutral texts
    are short) and such batches train worse.

    Returns ``{"micro_batches": [padded parts], "labels": labels in batch order, "restore": index}``:
    ``torch.cat(part outputs)[restore]`` puts per-example outputs back into batch order.
    """

    def __init__(self, collator: Callable[[list[dict]], Any], micro_batches: int) -> None:
        if micro_batches < 1:
            raise ValueError(f"micro_batches={micro_batches} must be at least 1")
        self.collator = collator
        self.micro_batches = micro_batches

    def __call__(self, features: list[dict]) -> dict[str, Any]:
        lengths = np.array([len(feature["input_ids"]) for feature in features])
        order = np.argsort(lengths, kind="stable")
        parts = np.array_split(order, min(self.micro_batches, len(features)))
        restore = torch.empty(len(order), dtype=torch.long)
        restore[torch.from_numpy(order)] = torch.arange(len(order))
        return {
            "micro_batches": [self.collator([features[i] for i in part]) for part in parts],
            "labels": torch.tensor([feature["labels"] for feature in features], dtype=torch.long),
            "restore": restore,
        }


def forward_backward(
    accelerator: Accelerator,
    model: torch.nn.Module,
    batch: dict[str, Any],
    class_weights: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    focal_gamma: float = 0.0,
    num_aspects: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and backward every micro-batch of ``batch`` (see :class:`MicroBatchCollator`), or its one packed pass
    (see :class:`~hf_indosent.training.packing.PackedCollator`).

    Each part's loss is its share of the whole batch's mean loss, so the summed gradients equal those of the whole
    batch. With ``class_weights`` the loss is the weighted cross-entropy (as ``F.cross_entropy(weight=...)`` over the
    whole batch: each part's weighted sum over the batch's total weight); ``label_smoothing`` is passed on to it as is,
    and ``focal_gamma`` > 0 makes it the focal loss (see :func:`summed_loss`).
    An aspect model (``num_aspects`` > 1, labels ``(batch, aspects)``) has each (text, aspect) pair as one row of the
    loss, which so is the sum of the per-aspect losses, per text (see :mod:`hf_indosent.modeling.aspects`).
    Processes synchronise gradients only on the last part. Returns the batch's mean loss and its logits in batch
    order (both detached).
    """
    labels = batch["labels"].to(accelerator.device)
    total = float(len(labels)) if class_weights is None else class_weights[labels].sum() / num_aspects

    def part_loss(logits: torch.Tensor, part_labels: torch.Tensor) -> torch.Tensor:
        rows, row_labels = flatten(logits, part_labels, num_aspects)
        return summed_loss(rows, row_labels, class_weights, label_smoothing, focal_gamma) / total

    if "packed" in batch:  # one padding-free pass (hf_indosent.training.packing); a single process, so nothing to sync
        with accelerator.autocast():
            logits = packed_logits(accelerator.unwrap_model(model), batch["packed"])
        loss = part_loss(logits, batch["sorted_labels"].to(accelerator.device))
        accelerator.backward(loss)
        return loss.detach().float(), logits.detach()[batch["restore"]]
    parts = batch["micro_batches"]
    loss = torch.zeros((), device=accelerator.device)
    logits = []
    for index, part in enumerate(parts):
        with nullcontext() if index == len(parts) - 1 else accelerator.no_sync(model):
            outputs = model(**{key: value for key, value in part.items() if key != "labels"})
            this_loss = part_loss(outputs.logits, part["labels"])
            accelerator.backward(this_loss)
        loss += this_loss.detach().float()
        logits.append(outputs.logits.detach())
    return loss, torch.cat(logits)[batch["restore"]]


def computed_masks(batch: dict[str, Any]) -> list[torch.Tensor]:
    """The attention masks of the positions a training batch computed, for the padding counts: each micro-batch's, or
    for a packed batch its real tokens only (its linear layers see no padding)."""
    if "packed" in batch:
        return [torch.ones_like(batch["packed"]["input_ids"])]
    return [part["attention_mask"] for part in batch["micro_batches"]]


def summed_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    class_weights: torch.Tensor | None,
    label_smoothing: float,
    focal_gamma: float,
) -> torch.Tensor:
    """The texts' summed (weighted) loss: cross-entropy, or with ``focal_gamma`` > 0 the focal loss.

    Focal loss (Lin et al. 2017) scales each text's cross-entropy by (1 - p_true) ** gamma, so texts the model already
    gets right with confidence stop pulling their scores further up; Mukhoti et al. (2020) found it calibrates better
    than cross-entropy. Summed, not averaged, so that micro-batches add up to the whole batch's loss.
    """
    logits = logits.float()
    if focal_gamma == 0:
        return F.cross_entropy(logits, labels, weight=class_weights, reduction="sum", label_smoothing=label_smoothing)
    log_p = F.log_softmax(logits, dim=-1).gather(1, labels[:, None]).squeeze(1)
    loss = -((1 - log_p.exp()) ** focal_gamma) * log_p
    if class_weights is not None:
        loss = loss * class_weights[labels]
    return loss.sum()


def balanced_class_weights(label_counts: list[int]) -> list[float]:
    """scikit-learn's "balanced" weights, n / (classes x count): every class weighs as much in the loss overall."""
    if any(count == 0 for count in label_counts):
        raise ValueError(f"class_weights=balanced needs every label in the training data (counts {label_counts})")
    total = sum(label_counts)
    return [total / (len(label_counts) * count) for count in label_counts]


PER_PROCESS = ("tokens", "positions")
"""Sums that each process counts for itself (reduced over processes); loss and confusion are gathered per step."""


class EpochTally:
    """The epoch's running sums (the keys of ``TrainState.epoch_sums``) on the device: steps never wait on the host.

    Folded into the checkpointed state at checkpoints and at the epoch end, so a run resumed mid-epoch reports the
    same epoch figures as an uninterrupted one. Training predictions are kept as confusion counts, not lists.
    """

    def __init__(self, device: torch.device, global_step: int, num_labels: int) -> None:
        self.sums = {
            "loss": torch.zeros((), device=device, dtype=torch.float64),
            "batches": torch.zeros((), device=device, dtype=torch.int64),
            "tokens": torch.zeros((), device=device, dtype=torch.int64),
            "positions": torch.zeros((), device=device, dtype=torch.int64),
            "confusion": torch.zeros((num_labels, num_labels), device=device, dtype=torch.int64),
        }
        self.step = torch.full((), global_step, device=device, dtype=torch.int64)
        self.first_bad_step = torch.full((), -1, device=device, dtype=torch.int64)
        self.started = time.perf_counter()

    def add(
        self, loss: torch.Tensor, preds: torch.Tensor, refs: torch.Tensor, attention_masks: list[torch.Tensor]
    ) -> None:
        sums = self.sums
        sums["loss"] += loss
        sums["batches"] += 1
        for mask in attention_masks:
            sums["tokens"] += mask.sum()
            sums["positions"] += mask.numel()
        sums["confusion"].index_put_((refs, preds), torch.ones_like(refs), accumulate=True)  # rows: references
        bad = (self.first_bad_step < 0) & ~torch.isfinite(loss)
        self.first_bad_step = torch.where(bad, self.step, self.first_bad_step)

    def running_loss(self, state: TrainState) -> float:
        """Mean loss of the epoch so far; raises :class:`NonFiniteLossError` if any step's loss was NaN/inf."""
        bad_step = int(self.first_bad_step.item())
        if bad_step >= 0:
            raise NonFiniteLossError(
                f"training loss became NaN/inf at optimizer step {bad_step + 1} (epoch {state.epoch + 1}). "
                "Stopped before saving anything from that point: best/ holds the last good best model and "
                "checkpoints/ the last good state. A learning rate too high needs a new run (a lower --learning_rate "
                f"and --overwrite_output_dir); bad data, once fixed, resumes with: {resume_command()}"
            )
        sums = state.epoch_sums
        return (sums["loss"] + self.sums["loss"].item()) / max(sums["batches"] + int(self.sums["batches"].item()), 1)

    def fold_into(self, state: TrainState, accelerator: Accelerator) -> None:
        """Add the device sums to ``state`` (every process calls this at the same point) and start from zero."""
        self.running_loss(state)
        seconds = time.perf_counter() - self.started
        for name, value in self.sums.items():
            total = accelerator.reduce(value, "sum") if name in PER_PROCESS else value
            previous = state.epoch_sums.get(name)
            if name == "confusion":
                matrix = total.cpu().numpy()
                state.epoch_sums[name] = (matrix + np.array(previous) if previous else matrix).tolist()
            else:
                state.epoch_sums[name] = previous + total.item()
            value.zero_()
        state.epoch_sums["seconds"] += seconds
        state.train_seconds += seconds
        self.started = time.perf_counter()


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return optimizer.param_groups[0]["lr"]
