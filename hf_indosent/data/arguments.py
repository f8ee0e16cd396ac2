"""Where the data comes from and how it is cut: the arguments of train, adapt and baseline."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hf_indosent.core.arguments import check
from hf_indosent.core.files import input_file_error
from hf_indosent.data.tasks import DEFAULT_TASK, TASKS, get_task


@dataclass
class DataArguments:
    task: str = field(
        default=DEFAULT_TASK,
        metadata={
            "help": f"The IndoNLU task: {', '.join(TASKS)} (smsa, emot: one label per text; casa, hoasa: one label "
            "per aspect).",
        },
    )
    data_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder with the task's IndoNLU files (SmSA: train_preprocess.tsv, valid_preprocess.tsv, "
            "test_preprocess[_masked_label].tsv; EmoT, CASA, HoASA: the same names in .csv). Default: download the "
            "pinned upstream files."
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

    @property
    def input_paths(self) -> dict[str, str | None]:
        """Option -> the local folder or files the examples are read from (a run's outputs must spare them)."""
        files = {f"--{split}_file": path for split, path in (self.data_files or {}).items()}
        return {"--data_dir": self.data_dir, **files}

    def __post_init__(self) -> None:
        try:
            self.task = get_task(self.task).name
        except ValueError as err:
            check(False, str(err))
        files = self.data_files
        check(
            (files is None and self.label_names is None) or self.task == DEFAULT_TASK,
            f"--task {self.task} reads the IndoNLU {self.task} files (--data_dir or the upstream download); your own "
            "--train_file/--validation_file/--label_names are for single-label files: drop --task, and give "
            "--label_names if your labels are not SmSA's",
        )
        check(
            not (self.data_dir and files),
            f"data_dir={self.data_dir!r} and train/validation/test files were both given: choose one source",
        )
        if files is not None:
            check(
                "train" in files and "validation" in files,
                "train_file and validation_file are both needed when you bring your own files",
            )
            for split, path in files.items():
                problem = input_file_error(path, f"{split}_file")
                check(problem is None, str(problem))
        if self.data_dir is not None:
            check(Path(self.data_dir).is_dir(), f"data_dir={self.data_dir!r} is not a folder: check the path")
        check(self.max_seq_len > 1, f"max_seq_len={self.max_seq_len} must be at least 2 (tutorial default: 512)")
        for name in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            check(value is None or value > 0, f"{name}={value} must be a positive number of rows")
