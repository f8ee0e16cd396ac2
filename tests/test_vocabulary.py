"""Vocabulary adaptation (``hf-indosent adapt --extend_vocab N``): frequent words become whole WordPiece tokens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_rows, run_train, write_tsv

NEW_WORDS = ["kenyamanannya", "memuaskan", "kekecewaan"]
"""Words the tiny WordPiece vocabulary (trained on other synthetic text) holds only as pieces."""


@pytest.fixture
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_frequent_new_words_are_the_split_ones_most_frequent_first(tokenizer):
    from hf_indosent.training.vocabulary import frequent_new_words

    assert all(len(tokenizer.tokenize(word)) > 1 for word in NEW_WORDS)
    texts = [
        "Kenyamanannya makanan memuaskan .",  # upper case counts as the tokenizer's lower case
        "kenyamanannya sangat memuaskan , kenyamanannya !",
        "kekecewaan kekecewaan makanan makanan makanan",
        "sekalisaja",  # seen once: not worth a token
    ]
    assert "makanan" in tokenizer.get_vocab()  # frequent, but already whole: never added
    assert frequent_new_words(tokenizer, texts, 10) == ["kenyamanannya", "kekecewaan", "memuaskan"]
    assert frequent_new_words(tokenizer, texts, 1) == ["kenyamanannya"]


def test_extended_tokenizer_keeps_old_ids_and_reads_new_words_whole_only(tokenizer, tmp_path):
    from transformers import AutoTokenizer

    from hf_indosent.training.vocabulary import extend_tokenizer

    extended = extend_tokenizer(tokenizer, NEW_WORDS)
    assert len(extended) == len(tokenizer) + len(NEW_WORDS)
    assert {token: extended.get_vocab()[token] for token in tokenizer.get_vocab()} == tokenizer.get_vocab()
    ids = [extended.convert_tokens_to_ids(word) for word in NEW_WORDS]
    assert ids == list(range(len(tokenizer), len(tokenizer) + len(NEW_WORDS)))
    text = "Makanan MEMUASKAN kekecewaan ."
    assert extended.tokenize(text) == ["makanan", "memuaskan", "kekecewaan", "."]
    # a whole-word entry is matched only where a word starts, never inside another word (as an added token would)
    assert "memuaskan" not in extended.tokenize("tidakmemuaskan")
    assert extended.tokenize("tidakmemuaskan") == tokenizer.tokenize("tidakmemuaskan")
    # the special tokens and the [CLS] ... [SEP] template survive
    assert extended(text)["input_ids"][0] == tokenizer.cls_token_id
    assert extended.mask_token_id == tokenizer.mask_token_id
    # saved and loaded the ordinary way, the words are still there
    extended.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path).tokenize(text) == extended.tokenize(text)


def test_new_embeddings_start_at_the_mean_of_their_old_pieces(tiny_model_dir, tokenizer):
    import torch
    from transformers import AutoModelForMaskedLM

    from hf_indosent.training.vocabulary import extend_tokenizer, init_new_embeddings

    model = AutoModelForMaskedLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        model.get_output_embeddings().bias.normal_()  # a trained head's bias is not all zeros
    before = model.get_input_embeddings().weight.detach().clone()
    bias_before = model.get_output_embeddings().bias.detach().clone()
    extended = extend_tokenizer(tokenizer, NEW_WORDS)
    init_new_embeddings(model, tokenizer, extended, NEW_WORDS)

    weight = model.get_input_embeddings().weight
    assert weight.shape[0] == len(extended) == model.config.vocab_size
    assert weight[: before.shape[0]].equal(before)  # old rows untouched
    for word in NEW_WORDS:
        pieces = tokenizer(word, add_special_tokens=False)["input_ids"]
        new_id = extended.convert_tokens_to_ids(word)
        assert torch.allclose(weight[new_id], before[pieces].mean(dim=0))
        assert model.get_output_embeddings().bias[new_id].item() == pytest.approx(bias_before[pieces].mean().item())
    assert model.get_output_embeddings().weight.data_ptr() == weight.data_ptr()  # still tied
    inputs = extended(["makanan memuaskan"], return_tensors="pt")
    assert model(**inputs).logits.shape[-1] == len(extended)


def test_a_tokenizer_that_is_not_wordpiece_is_refused_with_the_fix(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from hf_indosent.core.arguments import ArgumentError
    from hf_indosent.training.vocabulary import frequent_new_words

    word_level = Tokenizer(models.WordLevel({"[UNK]": 0, "enak": 1}, unk_token="[UNK]"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=word_level, unk_token="[UNK]")
    with pytest.raises(ArgumentError, match=r"needs a WordPiece tokenizer.*WordLevel.*drop --extend_vocab"):
        frequent_new_words(tokenizer, ["enak sekali sekali"], 5)


@pytest.mark.parametrize("value", [-1, 2.5, True])
def test_extend_vocab_must_be_a_whole_number(value):
    from hf_indosent.core.arguments import ArgumentError
    from hf_indosent.training.arguments import AdaptArguments

    with pytest.raises(ArgumentError, match=f"extend_vocab={value!r} must be a whole number"):
        AdaptArguments(model_name_or_path="m", output_dir="o", extend_vocab=value)


def test_adapt_with_extended_vocabulary_writes_a_folder_that_trains_and_loads(
    tiny_model_dir, tiny_smsa_dir, tmp_path, cache_dir
):
    from test_adaptation import adapt_into
    from transformers import AutoConfig, AutoTokenizer, pipeline

    data = tmp_path / "smsa"
    data.mkdir()
    rows = [(f"{text} {NEW_WORDS[i % 3]}", label) for i, (text, label) in enumerate(make_rows(96, seed=1))]
    write_tsv(data / "train_preprocess.tsv", rows)
    for name in ("valid_preprocess.tsv", "test_preprocess_masked_label.tsv"):
        (data / name).write_text((Path(tiny_smsa_dir) / name).read_text())

    adapted = tmp_path / "adapted"
    record = adapt_into(tiny_model_dir, data, adapted, cache_dir, extend_vocab=2, num_train_epochs=1)
    added = sorted(NEW_WORDS)[:2]  # all three are equally frequent: ties go alphabetically
    assert record["vocabulary"]["added_words"] == 2 and record["vocabulary"]["first_added"] == added
    assert json.loads((adapted / "adapt.json").read_text())["vocabulary"] == record["vocabulary"]
    tokenizer = AutoTokenizer.from_pretrained(adapted)
    assert AutoConfig.from_pretrained(adapted).vocab_size == len(tokenizer) == record["vocabulary"]["size"]
    assert [tokenizer.tokenize(word) for word in added] == [[word] for word in added]

    run_dir = tmp_path / "run"
    run_train(adapted, data, run_dir, cache_dir, num_train_epochs=1)
    recipe = json.loads((run_dir / "args.json").read_text())
    assert recipe["adapted_from"]["added_words"] == 2
    classifier = pipeline("text-classification", model=str(run_dir / "best"))
    assert classifier(f"makanan {added[1]}")[0]["label"] in {"positive", "neutral", "negative"}
    assert classifier.tokenizer.tokenize(added[1]) == [added[1]]

    from hf_indosent.sharing.model_card import build_model_card

    card = build_model_card("me/vocab-model", ["positive", "neutral", "negative"], recipe=recipe)
    assert "with 2 of their frequent words added to the vocabulary as whole tokens" in card
