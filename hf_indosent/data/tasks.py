"""The IndoNLU sentiment family as data: each task's kind, labels, aspects, text column and pinned upstream files.

Plain data, no `datasets` import: the model, the metrics, serving and the command line read a task's label names and
aspects from here without loading anything. The builders that read the files are :mod:`hf_indosent.data.smsa` (SmSA)
and :mod:`hf_indosent.data.indonlu` (EmoT, CASA, HoASA); :func:`hf_indosent.data.indonlu.load_task` loads any task
by name.

Every task's ``DatasetDict`` has a ``text`` column and one ``ClassLabel`` per label column, its names in IndoNLU's
index order (``LABEL2INDEX`` in IndoNLU's ``utils/data_utils.py``):

* single-label tasks (SmSA, EmoT): one column ``label``;
* aspect-based tasks (CASA, HoASA): one column per aspect, named by the aspect (``fuel``, ``price``, ...), every
  aspect with the same label names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from hf_indosent.core.suggest import did_you_mean
from hf_indosent.data.parsing import LABEL_NAMES

SINGLE_LABEL = "single_label"
"""One label per text (SmSA, EmoT): column ``label``."""

ASPECTS = "aspects"
"""One label per (text, aspect) (CASA, HoASA): one column per aspect."""

UPSTREAM_COMMIT = "ce728f6926a36174b9923dfe49d6a6839b6e9bb7"
"""The IndoNLP/indonlu commit every pinned file comes from."""

UPSTREAM_URL = "https://raw.githubusercontent.com/IndoNLP/indonlu/{commit}/dataset/{folder}/{filename}"

SPLITS: tuple[str, ...] = ("train", "validation", "test")


@dataclass(frozen=True)
class Task:
    """One task of the family: what its data looks like and where it comes from."""

    name: str
    """Registry key: ``smsa``, ``emot``, ``casa``, ``hoasa``."""
    title: str
    """How people write it: SmSA, EmoT, CASA, HoASA."""
    description: str
    kind: str
    """:data:`SINGLE_LABEL` or :data:`ASPECTS`."""
    label_names: tuple[str, ...]
    """In IndoNLU's index order (id 0 first); for aspect tasks, every aspect's labels."""
    aspects: tuple[str, ...]
    """Aspect names in IndoNLU's order (its ``ASPECT_DOMAIN``); empty for single-label tasks."""
    header: tuple[str, ...] | None
    """The columns of the upstream files' header row, in their order; ``None``: headerless (SmSA's TSV)."""
    folder: str
    """Upstream folder under ``dataset/``."""
    files: Mapping[str, str]
    """Split -> upstream file name; ``test`` is the labelled test file."""
    masked_test_file: str
    """The test file whose label column(s) hold :attr:`placeholder` on every row, not labels."""
    placeholder: str
    sha256: Mapping[str, str]
    """File name -> pinned sha256 at :data:`UPSTREAM_COMMIT`. The labelled test of EmoT, CASA and HoASA is not pinned:
    its bytes were not available when these pins were taken (see :attr:`test_pinned`)."""
    rows: Mapping[str, int]
    """Split -> number of examples upstream (the labelled and the masked test have the same rows)."""
    local_copy: str
    """An example ``data_dir`` for messages: where this project's checkouts keep a copy of the files."""
    text_column: str = "text"
    """The text column of the loaded dataset (whatever the upstream header calls it)."""

    @property
    def is_aspect_based(self) -> bool:
        return self.kind == ASPECTS

    @property
    def label_columns(self) -> tuple[str, ...]:
        """The dataset's ``ClassLabel`` columns: the aspects, or ``("label",)``."""
        return self.aspects if self.is_aspect_based else ("label",)

    @property
    def source_text_column(self) -> str | None:
        """The text column's name in the upstream files (``tweet``, ``sentence``, ``review``); ``None``: headerless."""
        if self.header is None:
            return None
        return next(column for column in self.header if column not in self.label_columns)

    @property
    def num_labels(self) -> int:
        """Labels per head: the classes of ``label``, or of each aspect."""
        return len(self.label_names)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.label_names))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: index for index, name in enumerate(self.label_names)}

    @property
    def test_pinned(self) -> bool:
        """Whether the labelled test file has a pinned sha256 (and so is part of the default download)."""
        return self.files["test"] in self.sha256

    @property
    def download_files(self) -> dict[str, str]:
        """Split -> the upstream file downloaded by default: only pinned files, so the masked test file when the
        labelled one is not pinned."""
        test = self.files["test"] if self.test_pinned else self.masked_test_file
        return {"train": self.files["train"], "validation": self.files["validation"], "test": test}

    def upstream_url(self, filename: str) -> str:
        return UPSTREAM_URL.format(commit=UPSTREAM_COMMIT, folder=self.folder, filename=filename)

    def __post_init__(self) -> None:
        if self.kind not in (SINGLE_LABEL, ASPECTS) or (self.kind == ASPECTS) != bool(self.aspects):
            raise ValueError(f"task {self.name!r}: kind {self.kind!r} does not match aspects {self.aspects}")
        if self.header is not None and len(self.header) != len(self.label_columns) + 1:
            raise ValueError(f"task {self.name!r}: header {self.header} must be the text and {self.label_columns}")


SMSA = Task(
    name="smsa",
    title="SmSA",
    description="document-level sentiment of Indonesian reviews (Purwarianti & Crisdayanti, 2019)",
    kind=SINGLE_LABEL,
    label_names=LABEL_NAMES,
    aspects=(),
    header=None,
    folder="smsa_doc-sentiment-prosa",
    files={"train": "train_preprocess.tsv", "validation": "valid_preprocess.tsv", "test": "test_preprocess.tsv"},
    masked_test_file="test_preprocess_masked_label.tsv",
    placeholder="neutral",
    sha256={
        "train_preprocess.tsv": "50f38ceed9b31521bf1581e126620532cc9b790712938159a2cdcf6906977a9b",
        "valid_preprocess.tsv": "6ab41ddc9d58a35086f05ebd2e209c74cb03d87d4f51d6abdfba674eafbefa74",
        "test_preprocess.tsv": "4e8016daa8e4e1b193f2a28a79d3a7804dd4e3f926a3ab7e8a64264f5f416a6f",
        "test_preprocess_masked_label.tsv": "ecc239ad7a069774954843da50eba266398bab70d0370f74684bf1c107b64e70",
    },
    rows={"train": 11000, "validation": 1260, "test": 500},
    local_copy="../shared/smsa",
)

_CSV_FILES = {"train": "train_preprocess.csv", "validation": "valid_preprocess.csv", "test": "test_preprocess.csv"}
_CSV_MASKED = "test_preprocess_masked_label.csv"

EMOT = Task(
    name="emot",
    title="EmoT",
    description="emotion of Indonesian tweets (Saputri et al., 2018)",
    kind=SINGLE_LABEL,
    label_names=("sadness", "anger", "love", "fear", "happy"),
    aspects=(),
    header=("label", "tweet"),
    folder="emot_emotion-twitter",
    files=_CSV_FILES,
    masked_test_file=_CSV_MASKED,
    placeholder="happy",
    sha256={
        "train_preprocess.csv": "51bb4e77d989004d0ca49c158f404d7eda956015a18b805401f7dee9b4d85fc1",
        "valid_preprocess.csv": "3cba3d7b2cc3afa5cdd452a13df2498ff8a32b420f59ed10a48e41a452c98f50",
        _CSV_MASKED: "85426e71254016c9d85707b77a15ae494eb44b5d1412dbe937c2b74c133293e9",
    },
    rows={"train": 3521, "validation": 440, "test": 440},
    local_copy="../shared/indonlu/emot",
)

CASA_ASPECTS = ("fuel", "machine", "others", "part", "price", "service")
CASA = Task(
    name="casa",
    title="CASA",
    description="aspect-based sentiment of Indonesian car reviews (Ilmania et al., 2018)",
    kind=ASPECTS,
    label_names=("negative", "neutral", "positive"),
    aspects=CASA_ASPECTS,
    header=("sentence", *CASA_ASPECTS),
    folder="casa_absa-prosa",
    files=_CSV_FILES,
    masked_test_file=_CSV_MASKED,
    placeholder="neutral",
    sha256={
        "train_preprocess.csv": "ffd2a88edf5e270cea79ad84d2ca4170c9a2fd71a38540280d5eb3b95d261f76",
        "valid_preprocess.csv": "4ea114d060796e59944b1cf7f0ad7950bd0532024348a17d0f7c6b6464328424",
        _CSV_MASKED: "9732fbd03cad76753a7bd237d1e17c979003b92b6b04730583d7d1e11796dd81",
    },
    rows={"train": 810, "validation": 90, "test": 180},
    local_copy="../shared/indonlu/casa",
)

HOASA_ASPECTS = ("ac", "air_panas", "bau", "general", "kebersihan", "linen", "service", "sunrise_meal", "tv", "wifi")
HOASA = Task(
    name="hoasa",
    title="HoASA",
    description="aspect-based sentiment of Indonesian hotel reviews (Azhar et al., 2019)",
    kind=ASPECTS,
    label_names=("neg", "neut", "pos", "neg_pos"),
    aspects=HOASA_ASPECTS,
    header=("review", *HOASA_ASPECTS),
    folder="hoasa_absa-airy",
    files=_CSV_FILES,
    masked_test_file=_CSV_MASKED,
    placeholder="neut",
    sha256={
        "train_preprocess.csv": "752935b62235f1a719c5e526e4ac68b3ba452f84a2a6f911ef20cb855b23546d",
        "valid_preprocess.csv": "7109001762f0bd83526d3de224c0ba5302bfb781eee6c1334aac8039a188f4fa",
        _CSV_MASKED: "92f8a0d9e9ceec02a3340444b4b79a4f606d27f7dbe5867150d34a8ca7634e09",
    },
    rows={"train": 2283, "validation": 285, "test": 286},
    local_copy="../shared/indonlu/hoasa",
)

TASKS: dict[str, Task] = {task.name: task for task in (SMSA, EMOT, CASA, HOASA)}
"""Task name -> :class:`Task`, SmSA first (the default)."""

DEFAULT_TASK = SMSA.name


def get_task(name: str) -> Task:
    """The task called ``name`` (case-insensitive); an unknown name raises ``ValueError`` with the near miss."""
    task = TASKS.get(name.strip().lower()) if isinstance(name, str) else None
    if task is None:
        near = did_you_mean(str(name).strip(), TASKS, quote=True)
        raise ValueError(f"unknown task {name!r}{near}; known tasks: {', '.join(TASKS)}")
    return task
