"""The strongest peer: ``transformers.Trainer`` on the same model and rows, with its own documented best settings.

What the Hugging Face text-classification guide does: ``datasets.map`` tokenization with truncation at
``max_seq_len``, ``DataCollatorWithPadding`` (to a multiple of 8 under mixed precision), and optionally length
grouping (``train_sampling_strategy="group_by_length"``, ``LengthGroupedSampler``); everything else is Trainer's
default (AdamW, linear decay, gradient clipping at 1.0, its own fused optimizer choice). No evaluation, saving or
logging during training (``eval_strategy="no"``, ``save_strategy="no"``, ``report_to="none"``); the model is
evaluated once after training.

Nothing in hf_indosent imports this file; benchmarks/paths.py runs :func:`run_trainer` in a process of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets
import numpy as np
from measure import Timer, encoder_training_flops, padding_fraction
from sklearn.metrics import accuracy_score, f1_score
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase, Trainer, TrainingArguments, set_seed

from hf_indosent.data.parsing import LABEL_NAMES
from hf_indosent.data.smsa import load_smsa
from hf_indosent.modeling.loading import load_model, load_tokenizer

EVAL_BATCH_SIZE = 64


class CountingCollator:
    """``DataCollatorWithPadding`` that also counts the real tokens and padded positions of the batches it builds.

    Trainer pads inside its DataLoader, so this is where its padding (with or without length grouping) shows.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, pad_to_multiple_of: int | None) -> None:
        self.collate = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to_multiple_of)
        self.real_tokens = self.positions = 0

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collate(features)
        mask = batch["attention_mask"]
        self.real_tokens += int(mask.sum())
        self.positions += mask.numel()
        return batch


def load_rows(
    data_dir: str | Path, max_train_samples: int | None, max_eval_samples: int | None, cache_dir: str | Path
) -> datasets.DatasetDict:
    """SmSA's training and validation splits, first N rows of each: the rows every benchmarked pipeline sees."""
    dataset = load_smsa(data_dir=data_dir, cache_dir=cache_dir)
    limits = {"train": max_train_samples, "validation": max_eval_samples}
    first = {split: dataset[split].num_rows if limit is None else limit for split, limit in limits.items()}
    return datasets.DatasetDict(
        {split: dataset[split].select(range(min(n, dataset[split].num_rows))) for split, n in first.items()}
    )


def run_trainer(
    model_path: str,
    data_dir: str | Path,
    output_dir: str | Path,
    *,
    max_train_samples: int | None,
    max_eval_samples: int | None,
    batch_size: int,
    epochs: int,
    lr: float,
    max_seq_len: int,
    seed: int,
    device: str,
    mixed_precision: str = "no",
    group_by_length: bool = False,
    attn_implementation: str = "sdpa",
    progress: bool = True,
) -> dict[str, Any]:
    """Train with ``Trainer``, then evaluate once; returns the figures the benchmark compares.

    ``train_s`` is the wall time of ``trainer.train()`` (device-synchronised); ``tokens_per_s`` counts real tokens
    of the batches the collator built during training; ``final_val_f1`` is sklearn's macro F1 of the trained model.
    """
    set_seed(seed)
    tokenizer = load_tokenizer(model_path)
    rows = load_rows(data_dir, max_train_samples, max_eval_samples, Path(output_dir) / "datasets-cache")
    tokenized = rows.map(
        lambda batch: tokenizer(batch["text"], truncation=True, max_length=max_seq_len),
        batched=True,
        remove_columns=["text"],
    )
    lengths = [len(ids) for ids in tokenized["train"]["input_ids"]]
    model = load_model(model_path, LABEL_NAMES, attn_implementation=attn_implementation)
    args = TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=EVAL_BATCH_SIZE,
        learning_rate=lr,
        num_train_epochs=epochs,
        seed=seed,
        train_sampling_strategy="group_by_length" if group_by_length else "random",
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        use_cpu=device == "cpu",
        bf16=mixed_precision == "bf16",
        fp16=mixed_precision == "fp16",
        disable_tqdm=not progress,
    )
    # multiples of 8 feed GPU tensor cores; a CPU gains nothing from the extra padding (as in hf_indosent)
    collator = CountingCollator(
        tokenizer, pad_to_multiple_of=8 if mixed_precision != "no" and device == "cuda" else None
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=tokenized["train"], data_collator=collator, processing_class=tokenizer
    )
    with Timer(device) as timer:
        output = trainer.train()
    real_tokens, positions = collator.real_tokens, collator.positions
    prediction = trainer.predict(tokenized["validation"])
    predicted = np.argmax(prediction.predictions, axis=-1)
    references = prediction.label_ids
    return {
        "settings": {
            "train_sampling_strategy": args.train_sampling_strategy,
            "optim": args.optim.value,
            "lr_scheduler_type": args.lr_scheduler_type.value,
            "weight_decay": args.weight_decay,
            "max_grad_norm": args.max_grad_norm,
            "mixed_precision": mixed_precision,
            "attn_implementation": attn_implementation,
            "pad_to_multiple_of": collator.collate.pad_to_multiple_of,
        },
        "n_train": len(lengths),
        "n_eval": len(references),
        "train_s": timer.seconds,
        "trainer_metrics": output.metrics,
        "samples_per_s": len(lengths) * epochs / timer.seconds,
        "train_real_tokens": real_tokens,
        "tokens_per_s": real_tokens / timer.seconds,
        "padding_fraction": padding_fraction(real_tokens, positions),
        "train_flops_total": epochs * encoder_training_flops(model.config, lengths, num_labels=len(LABEL_NAMES)),
        "final_val_f1": float(f1_score(references, predicted, average="macro")),
        "val_accuracy": float(accuracy_score(references, predicted)),
    }
