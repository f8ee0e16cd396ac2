"""Offline test kit: a tiny BERT + WordPiece tokenizer saved like a user's model, and small SmSA-style files."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before any HF import: no test may reach (or wait for) the Hub
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # One pytest-xdist worker per core (pyproject's `-n auto`): each computes on one thread, as do the processes it
    # starts. Two workers with a thread per core each would make OpenMP threads wait on each other, every pass slower.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import json
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    # Started in the background by a non-interactive shell (`cmd &`), which ignores SIGINT, and an ignored signal stays
    # ignored in every child: the Ctrl-C tests' processes would never see it. With a handler here, children start with
    # the default again (Python's KeyboardInterrupt), as under a terminal.
    signal.signal(signal.SIGINT, signal.default_int_handler)
if signal.getsignal(signal.SIGHUP) == signal.SIG_IGN:
    # Started under nohup (SIGHUP ignored, and so in every child): the stop-signal tests stand for a terminal's default.
    signal.signal(signal.SIGHUP, signal.SIG_DFL)

ROOT = Path(__file__).resolve().parents[1]
SMSA_DIR = ROOT.parent / "shared" / "smsa"
requires_smsa = pytest.mark.skipif(
    not (SMSA_DIR / "train_preprocess.tsv").is_file(), reason=f"SmSA files not found at {SMSA_DIR}"
)

POSITIVE = ["enak", "bagus", "mantap", "ramah", "nyaman", "murah", "puas", "suka", "keren", "bersih"]
NEGATIVE = ["buruk", "jelek", "kotor", "mahal", "kecewa", "lambat", "kasar", "basi", "sempit", "panas"]
NEUTRAL = ["kampanye", "partai", "rapat", "jadwal", "kantor", "berita", "laporan", "pemilu", "acara", "data"]
FAKE_TOKEN = "hf_FAKEtokenDoNotUse0123456789abcdef"
"""A Hub token that must never appear in any output, file or upload."""

FILLER = ["makanan", "tempat", "pelayanan", "nya", "sangat", "di", "ini", "yang", "dan", "saya", "restoran", "."]


def make_rows(n: int, seed: int) -> list[tuple[str, str]]:
    """Learnable synthetic reviews: the label is carried by its sentiment words."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label, words = [("positive", POSITIVE), ("neutral", NEUTRAL), ("negative", NEGATIVE)][i % 3]
        tokens = rng.choices(FILLER, k=rng.randint(2, 14)) + rng.choices(words, k=rng.randint(1, 3))
        rng.shuffle(tokens)
        rows.append((" ".join(tokens), label))
    rng.shuffle(rows)
    return rows


def write_tsv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("".join(f"{text}\t{label}\n" for text, label in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer, hidden-32 BERT with a WordPiece vocab of synthetic Indonesian text, saved to disk.

    The vocabulary is built, not trained: tokenizers' WordPieceTrainer breaks ties differently in every process, so a
    trained vocabulary (and every model and score built on it) changed from one pytest session to the next. Here it is
    the special tokens, every character alone and as a ``##`` continuation, every start and end of a corpus word, and
    every word (about 300 tokens, as the trained one had)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    corpus = [text for text, _ in make_rows(400, seed=0)]
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    normalizer, pre_tokenizer = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    words = sorted(
        {word for text in corpus for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))}
    )
    characters = sorted({character for word in words for character in word})
    pieces = sorted({word[:end] for word in words for end in range(1, len(word))})  # word starts, as WordPiece has
    pieces += sorted({f"##{word[start:]}" for word in words for start in range(1, len(word))})  # and word ends
    tokens = [*specials, *characters, *(f"##{character}" for character in characters), *pieces, *words]
    vocabulary = {token: index for index, token in enumerate(dict.fromkeys(tokens))}
    wordpiece = Tokenizer(models.WordPiece(vocabulary, unk_token="[UNK]"))
    wordpiece.normalizer = normalizer
    wordpiece.pre_tokenizer = pre_tokenizer
    cls_id, sep_id = wordpiece.token_to_id("[CLS]"), wordpiece.token_to_id("[SEP]")
    wordpiece.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tokenizer = BertTokenizerFast(tokenizer_object=wordpiece, model_max_length=128)
    tokenizer.save_pretrained(folder)

    config = BertConfig(
        vocab_size=wordpiece.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_smsa_dir(tmp_path_factory) -> Path:
    """SmSA-format folder (IndoNLU file names, masked test) with small learnable data."""
    folder = tmp_path_factory.mktemp("tiny-smsa")
    write_tsv(folder / "train_preprocess.tsv", make_rows(96, seed=1))
    write_tsv(folder / "valid_preprocess.tsv", make_rows(45, seed=2))
    test = [(text, "neutral") for text, _ in make_rows(21, seed=3)]
    write_tsv(folder / "test_preprocess_masked_label.tsv", test)
    return folder


ASPECT_WORDS = {  # CASA's aspects, each named by a word the tiny tokenizer can spell
    "fuel": "bensin",
    "machine": "mesin",
    "others": "lainnya",
    "part": "onderdil",
    "price": "harga",
    "service": "layanan",
}


def make_aspect_rows(n: int, seed: int) -> list[list[str]]:
    """Learnable synthetic CASA rows ``[text, fuel, machine, ...]``: each text names one or two aspects, each beside a
    positive or negative word, which is that aspect's label; the other aspects are neutral."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        labels = dict.fromkeys(ASPECT_WORDS, "neutral")
        tokens = rng.choices(FILLER, k=rng.randint(1, 6))
        for aspect in rng.sample(list(ASPECT_WORDS), k=1 + i % 2):
            label = rng.choice(["positive", "negative"])
            labels[aspect] = label
            tokens += [ASPECT_WORDS[aspect], rng.choice(POSITIVE if label == "positive" else NEGATIVE)]
        rows.append([" ".join(tokens), *labels.values()])
    return rows


def write_casa_csv(path: Path, rows: list[list[str]]) -> Path:
    import csv
    import io

    buffer = io.StringIO(newline="")
    csv.writer(buffer, lineterminator="\n").writerows([["sentence", *ASPECT_WORDS], *rows])
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_casa_dir(tmp_path_factory) -> Path:
    """CASA-format folder (IndoNLU file names and header, masked test) with small learnable aspect data."""
    folder = tmp_path_factory.mktemp("tiny-casa")
    write_casa_csv(folder / "train_preprocess.csv", make_aspect_rows(96, seed=1))
    write_casa_csv(folder / "valid_preprocess.csv", make_aspect_rows(30, seed=2))
    masked = [[row[0], *["neutral"] * len(ASPECT_WORDS)] for row in make_aspect_rows(12, seed=3)]
    write_casa_csv(folder / "test_preprocess_masked_label.csv", masked)
    return folder


@pytest.fixture(scope="session")
def tiny_aspect_classifier_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """What training on CASA saves as OUTPUT_DIR/best: the tiny BERT with one 3-label head per CASA aspect (stacked,
    see hf_indosent.modeling.aspects), trained a little so its labels vary with the text."""
    import torch.nn.functional as F

    from hf_indosent.data.tasks import CASA
    from hf_indosent.modeling.aspects import flatten
    from hf_indosent.modeling.loading import load_model

    def loss_of(model, batch, labels):
        logits, flat_labels = flatten(model(**batch).logits, labels, len(CASA.aspects))
        return F.cross_entropy(logits, flat_labels, reduction="sum").div(len(labels))

    rows = make_aspect_rows(192, seed=0)
    return train_tiny_classifier(
        tiny_model_dir,
        tmp_path_factory.mktemp("tiny-aspect-classifier"),
        lambda: load_model(str(tiny_model_dir), CASA.label_names, aspects=CASA.aspects),
        [row[0] for row in rows],
        [[CASA.label_names.index(label) for label in row[1:]] for row in rows],
        epochs=40,  # fewer: every aspect of every text answers neutral (the majority label)
        loss_of=loss_of,
    )


@pytest.fixture
def cache_dir(tmp_path) -> Path:
    """A private `datasets` cache so tests never see each other's Arrow files."""
    return tmp_path / "hf-cache"


@pytest.fixture(scope="session")
def tiny_classifier_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """What training saves as OUTPUT_DIR/best: the tiny BERT with a 3-label head named after SmSA's labels.

    Quick optimizer steps on synthetic reviews make its predictions vary with the text (a random head gives
    every text the same label), so tests can tell rows and labels apart.
    """
    from hf_indosent.data.parsing import LABEL_NAMES
    from hf_indosent.modeling.loading import load_model

    rows = make_rows(192, seed=0)
    return train_tiny_classifier(
        tiny_model_dir,
        tmp_path_factory.mktemp("tiny-classifier"),
        lambda: load_model(str(tiny_model_dir), LABEL_NAMES),
        [text for text, _ in rows],
        [LABEL_NAMES.index(label) for _, label in rows],
        epochs=20,  # the smallest count that learns all three labels (validation accuracy 1.0)
        loss_of=lambda model, batch, labels: model(**batch, labels=labels).loss,
    )


def train_tiny_classifier(
    tiny_model_dir: Path, folder: Path, make_model, texts: list[str], label_ids: list, epochs: int, loss_of
) -> Path:
    """The tiny classifier fixtures' few epochs of Adam (lr 3e-3, batches of 32, seed 0, one torch thread: see
    one_torch_thread) on ``texts``, then the model and tokenizer saved in ``folder``."""
    import torch

    from hf_indosent.modeling.loading import load_tokenizer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = make_model()
    tokenizer = load_tokenizer(str(tiny_model_dir))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(epochs):
        for start in range(0, len(texts), 32):
            batch = tokenizer(texts[start : start + 32], padding=True, return_tensors="pt")
            loss_of(model, batch, torch.tensor(label_ids[start : start + 32])).backward()
            optimizer.step()
            optimizer.zero_grad()
    torch.set_num_threads(threads)
    model.eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's tiny models on one CPU thread (use with pytest.mark.usefixtures).

    Matrices this small gain nothing from a second thread, and when other jobs share the CPU, OpenMP threads waiting
    for each other make every forward pass many times slower.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    """Each in-process training run builds its own Accelerator; forget the previous one's process-wide state."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(scope="session")
def no_dropout_model(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny BERT with dropout off: runs that differ only in process layout then follow the same trajectory."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    folder = tmp_path_factory.mktemp("tiny-bert-no-dropout")
    config = AutoConfig.from_pretrained(tiny_model_dir, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    AutoModel.from_pretrained(tiny_model_dir, config=config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    return folder


@pytest.fixture
def hub_calls(monkeypatch) -> dict:
    """Stand-ins for the Hub calls (whoami, create_repo, create_commit): they record what would be uploaded."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoUrl

    calls: dict = {}

    def create_repo(self, repo_id, **kwargs):
        calls["create_repo"] = {"repo_id": repo_id, **kwargs}
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def create_commit(self, repo_id, operations, **kwargs):
        files = {}
        for operation in operations:
            source = operation.path_or_fileobj
            files[operation.path_in_repo] = source if isinstance(source, bytes) else Path(source).read_bytes()
        calls["create_commit"] = {"repo_id": repo_id, "files": files, **kwargs}

    def whoami(self, token=None, **kwargs):
        calls["whoami"] = True
        return {"name": "someone", "type": "user"}

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    monkeypatch.setattr(HfApi, "whoami", whoami)
    return calls


# ---------------------------------------------------------------------------------------------------------------
# Running training and the command line on the tiny model (shared by the training, fault and robustness tests)

# Settings under which the tiny model learns the synthetic task within a few epochs (best epoch > 1).
FAST = {
    "learning_rate": 5e-3,
    "lr_gamma": 1.0,
    "per_device_train_batch_size": 8,
    "per_device_eval_batch_size": 16,
    "logging_steps": 2,
    "mixed_precision": "no",  # fixed, not measured per machine: tests compare runs; auto has its own tests
}


def run_train(model_dir: Path, data_dir: Path, output_dir: Path, cache_dir: Path, **overrides) -> dict:
    training = {**FAST, "output_dir": str(output_dir), **overrides}
    from hf_indosent.data.arguments import DataArguments
    from hf_indosent.training.arguments import FineTuneArguments, ModelArguments
    from hf_indosent.training.loop import train

    return train(
        ModelArguments(model_name_or_path=str(model_dir)),
        DataArguments(data_dir=str(data_dir), max_seq_len=64, dataset_cache_dir=str(cache_dir)),
        FineTuneArguments(**training),
    )


def cli_args(model_dir: Path, data_dir: Path, output_dir: Path, cache_dir: Path, **overrides) -> list[str]:
    values = {
        **FAST,
        "model_name_or_path": model_dir,
        "data_dir": data_dir,
        "output_dir": output_dir,
        "dataset_cache_dir": cache_dir,
        "max_seq_len": 64,
        **overrides,
    }
    return [item for key, value in values.items() for item in (f"--{key}", str(value))]


def log_lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def comparable(run_dir: Path) -> dict:
    """metrics.json and log.jsonl without wall-clock fields."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("train_runtime_s", "train_samples_per_second"):
        metrics.pop(key)
    history = log_lines(run_dir)
    for entry in history:
        del entry["epoch_seconds"], entry["validation_seconds"], entry["train"]["seconds"]
    return {"metrics": metrics, "history": history}


def run_cli(*command: str, launcher: list[str] | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*(launcher or [sys.executable]), *command],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


class Stop(KeyboardInterrupt):
    """Ctrl-C at a chosen moment."""


def interrupt_after_pieces(monkeypatch, count: int) -> None:
    from hf_indosent.inference import at_scale as predict_at_scale

    original, calls = predict_at_scale.commit_piece, []

    def commit(*args, **kwargs):
        original(*args, **kwargs)
        calls.append(1)
        if len(calls) == count:
            raise Stop

    monkeypatch.setattr(predict_at_scale, "commit_piece", commit)
