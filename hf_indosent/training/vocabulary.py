"""Vocabulary adaptation: the task's frequent words become whole tokens of a WordPiece tokenizer before adapting.

An English vocabulary cuts Indonesian words into about two pieces each (MiniLM on SmSA: 2.06 tokens per word), so a
sequence is twice as long as it needs to be and a word's meaning has to be composed from pieces that mean something
else in English. ``hf-indosent adapt --extend_vocab N`` adds the training texts' N most frequent words the
vocabulary lacks as whole-word entries of the WordPiece vocabulary itself (not as "added tokens", which would match
inside other words), and starts each new embedding at the mean of its old pieces' embeddings (the usual
initialisation in vocabulary-extension work); masked-LM adaptation then trains them. The folder written is an
ordinary tokenizer and model: ``AutoTokenizer`` / ``pipeline()`` load it anywhere.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from hf_indosent.core.arguments import ArgumentError

MIN_FREQUENCY = 2
"""A word seen once in the training texts is not worth a token: it would be trained from one context."""


def _wordpiece(tokenizer: PreTrainedTokenizerBase) -> dict:
    """The tokenizer's ``tokenizer.json`` as a dict; only a fast WordPiece (BERT-family) tokenizer can be extended."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    state = json.loads(backend.to_str()) if backend is not None else {}
    kind = state.get("model", {}).get("type")
    if kind != "WordPiece":
        raise ArgumentError(
            f"extend_vocab needs a WordPiece tokenizer (BERT family, e.g. IndoBERT or MiniLM); this model's is "
            f"{kind or type(tokenizer).__name__}: drop --extend_vocab"
        )
    return state


def words_of(tokenizer: PreTrainedTokenizerBase, text: str) -> list[str]:
    """The words WordPiece sees in ``text``: after the tokenizer's own normalizer (lower-casing) and pre-tokenizer."""
    backend = tokenizer.backend_tokenizer
    if backend.normalizer is not None:
        text = backend.normalizer.normalize_str(text)
    if backend.pre_tokenizer is None:
        return text.split()
    return [word for word, _ in backend.pre_tokenizer.pre_tokenize_str(text)]


def frequent_new_words(tokenizer: PreTrainedTokenizerBase, texts: Iterable[str], count: int) -> list[str]:
    """The ``count`` most frequent words of ``texts`` that the vocabulary holds only as several pieces.

    Ties are broken alphabetically, so every process (and every rerun) picks the same words in the same order."""
    vocabulary = _wordpiece(tokenizer)["model"]["vocab"]
    frequency = Counter(word for text in texts for word in words_of(tokenizer, text))
    candidates = [
        (word, seen)
        for word, seen in frequency.items()
        if seen >= MIN_FREQUENCY and word not in vocabulary and len(word) > 1
    ]
    candidates.sort(key=lambda item: (-item[1], item[0]))
    return [word for word, _ in candidates[:count]]


def extend_tokenizer(tokenizer: PreTrainedTokenizerBase, words: list[str]) -> PreTrainedTokenizerBase:
    """A copy of ``tokenizer`` whose WordPiece vocabulary also holds ``words``, with ids after every existing one.

    Built by writing the tokenizer, adding the words to its ``tokenizer.json`` and loading it back with
    ``AutoTokenizer``: exactly the way anyone loading the adapted folder will get it."""
    state = _wordpiece(tokenizer)
    vocabulary = state["model"]["vocab"]
    next_id = max([*vocabulary.values(), *(token["id"] for token in state.get("added_tokens", []))]) + 1
    for word in words:
        if word not in vocabulary:
            vocabulary[word] = next_id
            next_id += 1
    with tempfile.TemporaryDirectory(prefix="hf-indosent-vocab-") as folder:
        tokenizer.save_pretrained(folder)
        (Path(folder) / "tokenizer.json").write_text(json.dumps(state, ensure_ascii=False), encoding="utf-8")
        return AutoTokenizer.from_pretrained(folder)


@torch.no_grad()
def init_new_embeddings(
    model: PreTrainedModel, old: PreTrainedTokenizerBase, new: PreTrainedTokenizerBase, words: list[str]
) -> None:
    """Grow the model's embeddings to the new vocabulary; each new word starts at the mean of its old pieces.

    A masked-LM decoder tied to the input embeddings (BERT) follows them; an untied one is initialised the same
    way, and the decoder's bias of a new word starts at the mean of its pieces' biases."""
    old_rows = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(max(old_rows, len(new)), mean_resizing=False)
    embeddings = model.get_input_embeddings().weight
    output = model.get_output_embeddings()
    bias = getattr(output, "bias", None) if output is not None else None
    untied = output is not None and output.weight.data_ptr() != embeddings.data_ptr()
    for word in words:
        new_id = new.convert_tokens_to_ids(word)
        pieces = old(word, add_special_tokens=False)["input_ids"]
        embeddings[new_id] = embeddings[pieces].mean(dim=0)
        if untied:
            output.weight[new_id] = output.weight[pieces].mean(dim=0)
        if bias is not None:
            bias[new_id] = bias[pieces].mean()


def extend_vocabulary(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: Iterable[str], count: int
) -> tuple[PreTrainedTokenizerBase, dict[str, Any]]:
    """Add up to ``count`` of the texts' words as tokens and grow ``model`` to match (0: both unchanged).

    Returns the tokenizer to use from here on and what ``adapt.json`` records of the change."""
    words = frequent_new_words(tokenizer, texts, count) if count else []
    extended = extend_tokenizer(tokenizer, words) if words else tokenizer
    if words:
        init_new_embeddings(model, tokenizer, extended, words)
    return extended, {"added_words": len(words), "size": len(extended), "first_added": words[:20]}
