"""Tokenization into Arrow (once, cached by `datasets`) and dynamic padding with `DataCollatorWithPadding`."""

from __future__ import annotations

import datasets
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from hf_indosent.data.builders import label_columns

LENGTH_COLUMN = "length"
"""Number of tokens of each example, kept for length-sorted batching."""


def tokenize_dataset(
    dataset: datasets.Dataset | datasets.DatasetDict,
    tokenizer: PreTrainedTokenizerBase,
    max_seq_len: int = 512,
    num_proc: int | None = None,
) -> datasets.Dataset | datasets.DatasetDict:
    """Tokenize ``text`` with truncation at ``max_seq_len``; ``label`` becomes ``labels`` (what models expect), and
    an aspect task's label columns become one ``labels`` list per text, in aspect order (IndoNLU's).

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

    first = next(iter(dataset.values())) if isinstance(dataset, datasets.DatasetDict) else dataset
    columns = label_columns(first)
    if columns == ["label"]:
        tokenized = dataset.map(encode, batched=True, num_proc=num_proc, remove_columns=["text"], desc="Tokenizing")
        return tokenized.rename_column("label", "labels")

    def encode_aspects(batch: dict) -> dict:
        encoded = encode(batch)
        encoded["labels"] = [list(labels) for labels in zip(*(batch[column] for column in columns), strict=True)]
        return encoded

    removed = ["text", *columns]
    return dataset.map(encode_aspects, batched=True, num_proc=num_proc, remove_columns=removed, desc="Tokenizing")


def build_collator(tokenizer: PreTrainedTokenizerBase, tensor_cores: bool = False) -> DataCollatorWithPadding:
    """Pad each batch to its longest member; to a multiple of 8 for GPU tensor cores (mixed precision on CUDA).

    A CPU gains nothing from the extra padding, so bf16 on a CPU pads to the longest member too."""
    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if tensor_cores else None, return_tensors="pt")
