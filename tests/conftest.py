"""Offline test kit: a tiny BERT + WordPiece tokenizer saved like a user's model, and small SmSA-style files."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before any HF import: no test may reach (or wait for) the Hub
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import random
from pathlib import Path

import pytest

SMSA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "smsa"
requires_smsa = pytest.mark.skipif(
    not (SMSA_DIR / "train_preprocess.tsv").is_file(), reason=f"SmSA files not found at {SMSA_DIR}"
)

POSITIVE = ["enak", "bagus", "mantap", "ramah", "nyaman", "murah", "puas", "suka", "keren", "bersih"]
NEGATIVE = ["buruk", "jelek", "kotor", "mahal", "kecewa", "lambat", "kasar", "basi", "sempit", "panas"]
NEUTRAL = ["kampanye", "partai", "rapat", "jadwal", "kantor", "berita", "laporan", "pemilu", "acara", "data"]
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
    """A 2-layer, hidden-32 BERT with a WordPiece vocab trained on synthetic Indonesian text, saved to disk."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    corpus = [text for text, _ in make_rows(400, seed=0)]
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    wordpiece = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wordpiece.normalizer = normalizers.BertNormalizer(lowercase=True)
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wordpiece.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials))
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


@pytest.fixture
def cache_dir(tmp_path) -> Path:
    """A private `datasets` cache so tests never see each other's Arrow files."""
    return tmp_path / "hf-cache"
