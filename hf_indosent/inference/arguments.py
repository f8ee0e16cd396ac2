"""The arguments of the commands besides ``train``: predict, evaluate, push, demo, baseline and export.

Dataclasses with ``__post_init__`` checks that name the bad value and the fix, parsed by
:func:`hf_indosent.core.arguments.parse_args`; light at import, like :mod:`hf_indosent.core.arguments`. Every command
that takes
a model checks it from its files here (:func:`~hf_indosent.modeling.folders.resolve_model_source`), so a wrong path is
answered before torch and transformers are imported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hf_indosent.core.arguments import check, check_numbers
from hf_indosent.core.files import input_file_error
from hf_indosent.data.tasks import TASKS, get_task
from hf_indosent.modeling.folders import backend_files, baseline_folder, resolve_model_source

OUTPUT_FORMATS: dict[str, str] = {".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}
DEFAULT_PIECE_SIZE = 10_000
# Padded tokens per batch by default: on CPU, larger matrices stop paying off around here; GPUs want much more.
CPU_BATCH_TOKENS = 4096
GPU_BATCH_TOKENS = 32768
SPLIT_CHOICES = ("validation", "test")
TASK_DEFAULT_HELP = f"one of {', '.join(TASKS)} (default: the one the model was fine-tuned on, else smsa)"
DEFAULT_HOST = "127.0.0.1"
"""Where the demo listens unless told otherwise: this machine only."""
BACKENDS = ("auto", "torch", "torch-bf16", "torch-int8", "onnx", "onnx-int8")
"""What runs the forward pass of ``predict``/``evaluate``; ``auto`` picks by the model folder's files."""
INT8_FALLBACK_MARGIN = 0.3
"""onnx-int8 recomputes in fp32 every text whose top two int8 probabilities are closer than this (docs/fast-cpu-
inference.md): on SmSA about 4% of texts, which hold nearly all the labels int8 would change."""
DEFAULT_OPSET = 18
"""The ONNX opset torch.onnx's exporter writes natively; a higher one is converted to after export."""


def check_fallback_margin(margin: float) -> None:
    if not (isinstance(margin, (int, float)) and 0 <= margin < 1):
        raise ValueError(
            f"int8_fallback_margin={margin!r} must be in [0, 1): a difference of probabilities ({INT8_FALLBACK_MARGIN} "
            "by default; 0 runs int8 alone)"
        )


def check_batching(batch_size: int, max_batch_tokens: int | None, chunk_size: int) -> None:
    for name, value in (("batch_size", batch_size), ("max_batch_tokens", max_batch_tokens), ("chunk_size", chunk_size)):
        if value is not None and value < 1:
            raise ValueError(f"{name}={value} must be a positive number (texts, or tokens for max_batch_tokens)")


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is unknown: use one of {', '.join(BACKENDS)}")


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
            "help": "What runs the model: 'torch', 'torch-bf16' (bf16 autocast: fast on CPUs with native bf16 and on "
            "GPUs), 'torch-int8' (Linear layers quantized, CPU), 'onnx' or 'onnx-int8' "
            "(ONNX Runtime on the CPU, a folder written by `hf-indosent export`), or 'auto' (default): onnx-int8 if "
            "the folder has model_int8.onnx, else onnx if it has model.onnx, else torch."
        },
    )
    int8_fallback_margin: float = field(
        default=INT8_FALLBACK_MARGIN,
        metadata={
            "help": "onnx-int8: texts whose top two int8 probabilities (an aspect model's: on any aspect) are "
            "closer than this are computed again by the export's fp32 model.onnx, so int8 keeps fp32's labels where "
            "they are close calls (default "
            f"{INT8_FALLBACK_MARGIN}: about 4%% of SmSA texts); 0 runs int8 alone."
        },
    )

    def __post_init__(self) -> None:
        check_numbers(self)
        check_batching(self.batch_size, self.max_batch_tokens, self.chunk_size)
        check_backend(self.backend)
        check_fallback_margin(self.int8_fallback_margin)
        if self.max_length is not None and self.max_length < 2:
            raise ValueError(f"--max_length {self.max_length} must be at least 2 tokens, or unset (the model's limit)")
        if baseline_folder(self.model) is None:  # a TF-IDF baseline run has no transformers files to check
            resolve_model_source(self.model, weight_files=backend_files(self.backend))


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
            "help": "Predict the (masked) test split of --task and write the IndoNLU CodaLab file here (e.g. "
            "pred.txt), plus the zip to upload next to it (pred.zip)."
        },
    )
    task: str | None = field(
        default=None, metadata={"help": f"With --submission: the IndoNLU task to submit, {TASK_DEFAULT_HELP}."}
    )
    data_dir: str | None = field(
        default=None,
        metadata={"help": "With --submission: folder with the task's files (default: the pinned upstream files)."},
    )
    dataset_cache_dir: str | None = field(
        default=None, metadata={"help": "With --submission: the `datasets` Arrow cache (default: HF_DATASETS_CACHE)."}
    )

    def __post_init__(self) -> None:
        sources = [name for name in ("texts", "file", "dataset", "submission") if getattr(self, name) is not None]
        if len(sources) > 1:
            raise ValueError(f"{' and '.join('--' + name for name in sources)} were both given: choose one input")
        if self.file is not None and (problem := input_file_error(self.file, "--file")):
            raise ValueError(problem)
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
        elif self.data_dir is not None or self.task is not None:
            option = "--data_dir" if self.data_dir is not None else "--task"
            raise ValueError(f"{option} is only used with --submission (to find the task's test split)")
        if self.task is not None:
            get_task(self.task)  # an unknown name is refused now, with the near miss
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
    task: str | None = field(
        default=None,
        metadata={
            "help": f"IndoNLU task whose split is scored, {TASK_DEFAULT_HELP}; with --file, the task the model must "
            "be of."
        },
    )
    split: str = field(default="validation", metadata={"help": "Split of --task to score: 'validation' or 'test'."})
    data_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder with the task's files (default: the pinned upstream files; SmSA's labelled test included)."
        },
    )
    file: str | None = field(
        default=None,
        metadata={"help": "Score your own labelled file (.tsv or .csv, one label per text) instead of a task's split."},
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
            raise ValueError("--file and --data_dir were both given: score either your file or a task's split")
        task = get_task(self.task) if self.task is not None else None  # an unknown name is refused with the near miss
        if task is not None and task.is_aspect_based and self.file is not None:
            raise ValueError(
                f"--file holds one label per text, but {task.title} has one per aspect: score its split with "
                "--data_dir (a folder with its upstream files), or drop --file"
            )
        if self.file is not None and (problem := input_file_error(self.file, "--file")):
            raise ValueError(problem)
        if self.data_dir is not None and not Path(self.data_dir).is_dir():
            raise ValueError(f"--data_dir {self.data_dir!r} is not a folder: check the path")

    @property
    def name(self) -> str:
        """Prefix of the output files: the split, or the file's stem."""
        return Path(self.file).stem if self.file is not None else self.split


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
            f"{', '.join(f'{c:g}' for c in BASELINE_C_GRID)} by validation macro F1 (for CASA and HoASA over every "
            "(text, aspect) pair, one C for every aspect's classifier)."
        },
    )
    max_features: int | None = field(
        default=None,
        metadata={"help": "Keep at most N word and N character n-grams (the most frequent). Default: all seen twice."},
    )
    seed: int = field(default=42, metadata={"help": "Random seed of the saga solver."})

    def __post_init__(self) -> None:
        check_numbers(self)
        check(bool(self.output_dir), "output_dir is required: pass --output_dir DIR (e.g. outputs/baseline)")
        check(self.C is None or self.C > 0, f"C={self.C} must be > 0, or unset to pick it on validation")
        check(
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
        check(bool(self.model.strip()), "--model is empty: pass a training run folder (OUTPUT_DIR) or its best/")
        check(bool(self.output_dir.strip()), "--output_dir is empty: pass the folder to write the export to")
        check(
            self.opset >= DEFAULT_OPSET,
            f"--opset {self.opset} is too old: torch.onnx writes opset {DEFAULT_OPSET} or later (the default)",
        )
        resolve_model_source(self.model)
