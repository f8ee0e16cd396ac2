"""SmSA builder: real files, byte-exact texts, strict errors, checksums, user files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import datasets
import pytest
from conftest import SMSA_DIR, make_rows, requires_smsa, write_tsv
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hf_indosent.data import smsa as smsa_data
from hf_indosent.data.parsing import LABEL_NAMES, NO_LABEL, DataFormatError
from hf_indosent.data.smsa import ChecksumError, MissingLabelsError, load_smsa, require_labels, verify_sha256


def raw_texts(path: Path) -> list[str]:
    """A plain read of an SmSA file: everything before the last tab of each line."""
    return [line.rsplit(b"\t", 1)[0].decode("utf-8") for line in path.read_bytes().split(b"\n") if line]


def smsa_folder(tmp_path: Path, train_bytes: bytes) -> Path:
    folder = tmp_path / "smsa"
    folder.mkdir()
    (folder / "train_preprocess.tsv").write_bytes(train_bytes)
    write_tsv(folder / "valid_preprocess.tsv", [("tempat nya bagus", "positive"), ("biasa saja", "neutral")])
    return folder


@requires_smsa
def test_real_smsa_counts_and_labels(cache_dir):
    dataset = load_smsa(data_dir=SMSA_DIR, cache_dir=cache_dir)
    assert {split: dataset[split].num_rows for split in dataset} == {"train": 11000, "validation": 1260, "test": 500}
    for split in dataset:
        assert dataset[split].features["label"].names == ["positive", "neutral", "negative"]
    assert Counter(dataset["train"]["label"]) == {0: 6416, 1: 1148, 2: 3436}
    assert Counter(dataset["validation"]["label"]) == {0: 735, 1: 131, 2: 394}
    assert set(dataset["test"]["label"]) == {NO_LABEL}  # masked: "neutral" there is a placeholder
    with pytest.raises(MissingLabelsError, match="predict --submission"):
        require_labels(dataset["test"], "test")
    require_labels(dataset["validation"], "validation")


@requires_smsa
def test_real_smsa_texts_are_byte_exact(cache_dir):
    dataset = load_smsa(data_dir=SMSA_DIR, cache_dir=cache_dir)
    files = {"train": "train_preprocess.tsv", "validation": "valid_preprocess.tsv", "test": smsa_data.MASKED_TEST_FILE}
    for split, name in files.items():
        assert list(dataset[split]["text"]) == raw_texts(SMSA_DIR / name), split


def test_tiny_folder_loads(tiny_smsa_dir, cache_dir):
    dataset = load_smsa(data_dir=tiny_smsa_dir, cache_dir=cache_dir)
    assert dataset["train"].num_rows == 96
    assert list(dataset["validation"]["text"]) == raw_texts(tiny_smsa_dir / "valid_preprocess.tsv")
    assert set(dataset["test"]["label"]) == {NO_LABEL}


def test_labelled_test_file_is_preferred(tmp_path, cache_dir):
    folder = smsa_folder(tmp_path, b"enak\tpositive\n")
    write_tsv(folder / "test_preprocess_masked_label.tsv", [("a", "neutral")])
    write_tsv(folder / "test_preprocess.tsv", [("a", "negative")])
    assert list(load_smsa(data_dir=folder, cache_dir=cache_dir)["test"]["label"]) == [2]


def test_one_bad_line_names_file_and_line_and_caches_nothing(tmp_path, cache_dir):
    good = "".join(f"{text}\t{label}\n" for text, label in make_rows(10, seed=5))
    lines = good.splitlines(keepends=True)
    lines[6] = "teks dengan\ttab berlebih\tpositive\n"
    folder = smsa_folder(tmp_path, "".join(lines).encode())
    with pytest.raises(DataFormatError) as info:
        load_smsa(data_dir=folder, cache_dir=cache_dir)
    message = str(info.value)
    assert f"{folder / 'train_preprocess.tsv'}, line 7" in message
    assert "expected 2 columns" in message and "found 3" in message
    assert not list(cache_dir.rglob("*.arrow")) and not list(cache_dir.rglob("dataset_info.json"))

    (folder / "train_preprocess.tsv").write_text(good, encoding="utf-8")  # fixed file: new cache key, loads
    assert load_smsa(data_dir=folder, cache_dir=cache_dir)["train"].num_rows == 10


def test_data_dir_must_hold_the_smsa_files(tmp_path, cache_dir):
    with pytest.raises(FileNotFoundError, match=r"train_preprocess\.tsv"):
        load_smsa(data_dir=tmp_path, cache_dir=cache_dir)


def test_user_csv_with_own_labels_and_quoted_newlines(tmp_path, cache_dir):
    train = tmp_path / "train.csv"
    train.write_text('review,stars\n"bagus, sekali",good\n"baris\ndua ""kutip""",bad\nbiasa,good\n', encoding="utf-8")
    test = tmp_path / "test.csv"
    test.write_text("review\nsatu\ndua\n", encoding="utf-8")
    dataset = load_smsa(
        data_files={"train": train, "test": test},
        label_names=["bad", "good"],
        text_column="review",
        label_column="stars",
        cache_dir=cache_dir,
    )
    assert dataset["train"].features["label"].names == ["bad", "good"]
    assert list(dataset["train"]["text"]) == ["bagus, sekali", 'baris\ndua "kutip"', "biasa"]
    assert list(dataset["train"]["label"]) == [1, 0, 1]
    assert list(dataset["test"]["label"]) == [NO_LABEL, NO_LABEL]


def test_user_csv_errors_name_the_line(tmp_path, cache_dir):
    train = tmp_path / "train.csv"
    train.write_text('text,label\nok,positive\n"baris\ndua",positive\nok,unknown\n', encoding="utf-8")
    with pytest.raises(DataFormatError) as info:
        load_smsa(data_files={"train": train}, cache_dir=cache_dir)
    assert info.value.line == 5 and "unknown label 'unknown'" in str(info.value)

    train.write_text("text,text\nok,positive\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="duplicate column names"):
        load_smsa(data_files={"train": train}, cache_dir=cache_dir)


def test_user_tsv_with_header_and_unknown_split(tmp_path, cache_dir):
    train = tmp_path / "train.tsv"
    train.write_text("label\ttext\tid\npositive\tenak\t1\nnegative\tjelek\t2\n", encoding="utf-8")
    dataset = load_smsa(data_files={"train": train}, cache_dir=cache_dir)
    assert list(dataset["train"]["text"]) == ["enak", "jelek"]
    with pytest.raises(ValueError, match="unknown split"):
        load_smsa(data_files={"dev": train}, cache_dir=cache_dir)
    with pytest.raises(ValueError, match="not both"):
        load_smsa(data_dir=tmp_path, data_files={"train": train}, cache_dir=cache_dir)


def test_verify_sha256(tmp_path):
    path = tmp_path / "file.tsv"
    path.write_bytes(b"enak\tpositive\n")
    verify_sha256(path, smsa_data.sha256_of(path))
    with pytest.raises(ChecksumError, match="sha256 mismatch for https://example"):
        verify_sha256(path, "0" * 64, source="https://example/file.tsv")


def test_upstream_download_is_checksummed(tmp_path, cache_dir, monkeypatch):
    """The default (upstream) path with downloads served from local files; a tampered file must fail."""
    files = {name: write_tsv(tmp_path / name, make_rows(6, seed=i)) for i, name in enumerate(smsa_data.SHA256)}
    requested = []

    def fake_download(self, urls):
        requested.extend(urls.values())
        return {split: str(files[url.rsplit("/", 1)[1]]) for split, url in urls.items()}

    monkeypatch.setattr(datasets.DownloadManager, "download", fake_download)
    monkeypatch.setattr(smsa_data, "SHA256", {name: smsa_data.sha256_of(path) for name, path in files.items()})
    dataset = load_smsa(cache_dir=cache_dir)
    assert sorted(dataset) == ["test", "train", "validation"]
    assert all(smsa_data.UPSTREAM_COMMIT in url for url in requested)
    assert dataset["test"].num_rows == 6 and NO_LABEL not in dataset["test"]["label"]  # upstream test is labelled

    files["valid_preprocess.tsv"].write_bytes(b"tampered\tpositive\n")
    with pytest.raises(ChecksumError, match=r"valid_preprocess\.tsv"):
        load_smsa(cache_dir=tmp_path / "other-cache")


row_text = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\t\n\r"), min_size=1, max_size=40
).filter(lambda text: text.strip() and not text.startswith("\ufeff"))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(row_text, st.sampled_from(LABEL_NAMES)), min_size=1, max_size=20))
def test_any_rows_round_trip(rows, tmp_path_factory):
    folder = tmp_path_factory.mktemp("roundtrip")
    path = write_tsv(folder / "train.tsv", rows)
    train = load_smsa(data_files={"train": path}, header=False, cache_dir=folder / "cache")["train"]
    assert list(train["text"]) == [text for text, _ in rows]
    assert list(train["label"]) == [LABEL_NAMES.index(label) for _, label in rows]
