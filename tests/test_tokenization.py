"""Tokenization into Arrow and padding through DataCollatorWithPadding."""

from __future__ import annotations

import pytest
import torch

from hf_indosent.data.smsa import load_smsa
from hf_indosent.data.tokenization import build_collator, tokenize_dataset
from hf_indosent.modeling.loading import load_tokenizer
from hf_indosent.training.step import MicroBatchCollator


def test_tokenize_truncates_keeps_length_and_labels(tiny_model_dir, tiny_smsa_dir, cache_dir):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    dataset = load_smsa(data_dir=tiny_smsa_dir, cache_dir=cache_dir)
    tokenized = tokenize_dataset(dataset, tokenizer, max_seq_len=8)
    train = tokenized["train"]
    assert set(train.column_names) == {"input_ids", "token_type_ids", "attention_mask", "labels", "length"}
    assert list(train["labels"]) == list(dataset["train"]["label"])
    assert max(train["length"]) == 8
    assert all(len(ids) == length for ids, length in zip(train["input_ids"], train["length"], strict=True))
    full = tokenize_dataset(dataset["validation"], tokenizer, max_seq_len=512)
    assert full[0]["input_ids"] == tokenizer(dataset["validation"][0]["text"])["input_ids"]


def test_collator_pads_to_longest_or_multiple_of_eight(tiny_model_dir, tiny_smsa_dir, cache_dir):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    train = tokenize_dataset(load_smsa(data_dir=tiny_smsa_dir, cache_dir=cache_dir)["train"], tokenizer, 64)
    features = [{k: v for k, v in train[i].items() if k != "length"} for i in range(5)]
    longest = max(len(f["input_ids"]) for f in features)
    batch = build_collator(tokenizer)(features)
    assert batch["input_ids"].shape == (5, longest)
    assert batch["attention_mask"].sum().item() == sum(len(f["input_ids"]) for f in features)
    assert batch["labels"].tolist() == [f["labels"] for f in features]
    padded = build_collator(tokenizer, tensor_cores=True)(features)
    assert padded["input_ids"].shape[1] % 8 == 0 and padded["input_ids"].shape[1] >= longest


@pytest.mark.parametrize("micro_batches", [1, 3, 4, 20])
def test_micro_batches_are_length_sorted_parts_of_the_same_batch(
    tiny_model_dir, tiny_smsa_dir, cache_dir, micro_batches
):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    train = tokenize_dataset(load_smsa(data_dir=tiny_smsa_dir, cache_dir=cache_dir)["train"], tokenizer, 64)
    features = [{k: v for k, v in train[i].items() if k != "length"} for i in range(10)]
    batch = MicroBatchCollator(build_collator(tokenizer), micro_batches)(features)
    parts = batch["micro_batches"]
    assert len(parts) == min(micro_batches, 10)
    assert sorted(len(part["labels"]) for part in parts) == sorted(
        len(a) for a in torch.arange(10).tensor_split(len(parts))
    )
    for part in parts:  # each part padded only to its own longest text
        assert part["input_ids"].shape[1] == part["attention_mask"].sum(1).max()
    maxima = [part["attention_mask"].sum(1).max().item() for part in parts]
    assert maxima == sorted(maxima)
    assert batch["labels"].tolist() == [f["labels"] for f in features]
    # restore puts the concatenated rows back into batch order: every example exactly once
    rows = torch.cat([part["labels"] for part in parts])[batch["restore"]]
    assert rows.tolist() == batch["labels"].tolist()
    lengths = torch.cat([part["attention_mask"].sum(1) for part in parts])[batch["restore"]]
    assert lengths.tolist() == [len(f["input_ids"]) for f in features]


def test_micro_batches_must_be_positive(tiny_model_dir):
    with pytest.raises(ValueError, match="micro_batches=0"):
        MicroBatchCollator(build_collator(load_tokenizer(str(tiny_model_dir))), 0)
