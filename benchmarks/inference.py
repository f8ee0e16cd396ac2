"""Inference side by side: ``pipeline("text-classification")`` called plainly against hf_indosent's Predictor.

Both classify the same texts with the same model on the same device; their labels must be identical. What each
forward pass computed (real tokens per text, padded positions) is counted by a hook on the model, so padding and
FLOPs are measured from the batches each path really formed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from measure import Timer, encoder_forward_flops, padding_fraction
from transformers import PreTrainedModel, pipeline

from hf_indosent.inference.predictor import Predictor


class ForwardCounter:
    """Real tokens of every sequence and padded positions of every batch a model's forward passes receive."""

    def __init__(self, model: torch.nn.Module) -> None:
        self._lengths: list[torch.Tensor] = []
        self.positions = 0
        model.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        mask = kwargs.get("attention_mask")
        if mask is None:
            raise RuntimeError(f"{type(module).__name__} was called without attention_mask: padding cannot be counted")
        self._lengths.append(mask.sum(dim=1))  # stays on the device: no synchronisation inside a timed pass
        self.positions += mask.numel()

    def reset(self) -> None:
        self._lengths, self.positions = [], 0

    def lengths(self) -> list[int]:
        return torch.cat(self._lengths).tolist() if self._lengths else []


@dataclass
class InferencePath:
    """One way to classify texts: ``run(texts)`` returns their labels; ``counter`` watches ``model``'s inputs."""

    run: Callable[[list[str]], list[str]]
    model: PreTrainedModel
    counter: ForwardCounter


def plain_pipeline_path(model_dir: str | Path, *, batch_size: int, max_length: int, device: str) -> InferencePath:
    """``pipeline("text-classification")`` called plainly on the list with ``batch_size``: the reference path.

    ``truncation``/``max_length`` only keep over-long texts from crashing; they change nothing for shorter ones.
    """
    pipe = pipeline("text-classification", model=str(model_dir), device=device, truncation=True, max_length=max_length)
    return InferencePath(
        run=lambda items: [output["label"] for output in pipe(items, batch_size=batch_size)],
        model=pipe.model,
        counter=ForwardCounter(pipe.model),
    )


def predict_path(model_dir: str | Path, *, max_length: int, device: str) -> InferencePath:
    """Our path: a loaded :class:`Predictor` (length-sorted, token-budget batches, input order restored)."""
    predictor = Predictor(model_dir, device=device, max_length=max_length)
    model = predictor.pipe.model
    return InferencePath(
        run=lambda items: [result["label"] for result in predictor(items)], model=model, counter=ForwardCounter(model)
    )


def time_inference(
    paths: dict[str, InferencePath], texts: list[str], *, repeats: int, device: str, warmup: int = 8
) -> dict[str, dict[str, Any]]:
    """Time every path ``repeats`` times, taking turns, and keep each one's fastest pass.

    Taking turns spreads slow spells of a shared machine over all paths; the fastest pass is the least disturbed
    (as ``timeit`` reports). Every pass is listed under ``all_seconds``. Labels and counts come from the last pass.
    """
    for path in paths.values():
        path.run(texts[:warmup])  # first-call costs (kernel selection) are not throughput
    seconds: dict[str, list[float]] = {name: [] for name in paths}
    labels: dict[str, list[str]] = {}
    for _ in range(repeats):
        for name, path in paths.items():
            path.counter.reset()
            with Timer(device) as timer:
                labels[name] = path.run(texts)
            seconds[name].append(timer.seconds)
    figures = {}
    for name, path in paths.items():
        best, lengths = min(seconds[name]), path.counter.lengths()
        flops = encoder_forward_flops(path.model.config, lengths, num_labels=path.model.config.num_labels)
        figures[name] = {
            "seconds": best,
            "all_seconds": seconds[name],
            "texts_per_s": len(texts) / best,
            "real_tokens": sum(lengths),
            "tokens_per_s": sum(lengths) / best,
            "padding_fraction": padding_fraction(sum(lengths), path.counter.positions),
            "flops": flops,
            "flops_per_s": flops / best,
            "labels": labels[name],
        }
    return figures


def run_inference(
    model_dir: str | Path, texts: list[str], *, batch_size: int, max_length: int, repeats: int, device: str
) -> dict[str, Any]:
    """Both paths over the same texts with the same model; ``labels_identical`` says whether they agree."""
    paths = {
        "plain_pipeline": plain_pipeline_path(model_dir, batch_size=batch_size, max_length=max_length, device=device),
        "predict": predict_path(model_dir, max_length=max_length, device=device),
    }
    figures = time_inference(paths, texts, repeats=repeats, device=device)
    plain, ours = figures["plain_pipeline"], figures["predict"]
    mismatched = [i for i, (a, b) in enumerate(zip(plain.pop("labels"), ours.pop("labels"), strict=True)) if a != b]
    return {
        "n_texts": len(texts),
        **figures,
        "labels_identical": not mismatched,
        "mismatched_indices": mismatched,
    }
