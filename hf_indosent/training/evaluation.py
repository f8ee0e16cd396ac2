"""Validation and test passes of fine-tuning: the loss and macro metrics over every example exactly once, in fp32."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from hf_indosent.metrics.scores import compute_metrics
from hf_indosent.modeling.aspects import flatten
from hf_indosent.training.setup import Run


@dataclass
class Scored:
    """What one pass over an evaluation split gives: metrics, and the gathered predictions, references and logits."""

    metrics: dict[str, float]
    predictions: list[int]
    references: list[int]
    logits: torch.Tensor


def full_precision_forward(accelerator: Accelerator, model: torch.nn.Module) -> Callable[..., Any]:
    """The model's forward without the mixed-precision autocast accelerate wraps it in.

    Weights stay fp32 under mixed precision and best/ is saved, loaded and predicted with in fp32: scoring in fp32
    makes the metrics that pick best/ (and metrics.json) the ones its predictions give, to the last label."""
    inner = accelerator.unwrap_model(model)
    return inner.__dict__.get("_original_forward", inner)


@torch.no_grad()
def evaluate(run: Run, loader: DataLoader, desc: str = "Evaluating") -> Scored:
    """Loss and the four macro metrics over every example of ``loader`` exactly once, on all processes.

    For an aspect model every (text, aspect) pair is one prediction (IndoNLU's flattened macro metrics; the
    predictions, references and logits of :class:`Scored` are those pairs, text-major) and a text's loss is the sum of
    its aspects' losses."""
    accelerator, model = run.accelerator, run.model
    num_aspects = run.num_aspects
    model.eval()
    forward = full_precision_forward(accelerator, model)
    all_logits, references, losses = [], [], []
    for batch in tqdm(loader, desc=desc, leave=False, disable=not accelerator.is_local_main_process):
        labels = batch.pop("labels")
        logits = forward(**batch).logits.float()
        rows, row_labels = flatten(logits, labels, num_aspects)
        loss = F.cross_entropy(rows, row_labels, reduction="none").reshape(len(labels), -1).sum(1)
        logits, refs, loss = accelerator.gather_for_metrics((logits, labels, loss))  # per text: exact remainders
        all_logits.append(logits)
        references.append(refs)
        losses.append(loss)
    logits, labels = flatten(torch.cat(all_logits), torch.cat(references), num_aspects)
    preds, refs = logits.argmax(-1).tolist(), labels.tolist()
    metrics = compute_metrics(preds, refs, run.metric)
    metrics["loss"] = torch.cat(losses).mean().item()
    metrics["num_examples"] = len(refs) // num_aspects
    return Scored(metrics, preds, refs, logits.cpu())
