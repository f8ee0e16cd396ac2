"""Tokenization into Arrow (once, cached by `datasets`) and dynamic padding with `DataCollatorWithPadding`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import datasets
import numpy as np
import torch
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

LENGTH_COLUMN = "length"
"""Number of tokens of each example, kept for length-sorted batching."""


def tokenize_dataset(
    dataset: datasets.Dataset | datasets.DatasetDict,
    tokenizer: PreTrainedTokenizerBase,
    max_seq_len: int = 512,
    num_proc: int | None = None,
) -> datasets.Dataset | datasets.DatasetDict:
    """Tokenize ``text`` with truncation at ``max_seq_len``; ``label`` becomes ``labels`` (what models expect).

    The result holds the model inputs, ``labels`` and ``length``; ``text`` is dropped so batches carry tensors only.
    """
    if not tokenizer.is_fast:
        raise ValueError(
            f"{type(tokenizer).__name__} is a slow tokenizer; hf_indosent needs a fast one "
            "(AutoTokenizer.from_pretrained(..., use_fast=True))."
        )

    def encode(batch: dict) -> dict:
        encoded = tokenizer(batch["text"], truncation=True, max_length=max_seq_len)
        encoded[LENGTH_COLUMN] = [len(ids) for ids in encoded["input_ids"]]
        return encoded

    tokenized = dataset.map(encode, batched=True, num_proc=num_proc, remove_columns=["text"], desc="Tokenizing")
    return tokenized.rename_column("label", "labels")


def build_collator(tokenizer: PreTrainedTokenizerBase, mixed_precision: bool = False) -> DataCollatorWithPadding:
    """Pad each batch to its longest member; to a multiple of 8 under mixed precision (tensor-core friendly)."""
    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if mixed_precision else None, return_tensors="pt")


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
