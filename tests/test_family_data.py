"""EmoT, CASA, HoASA builders and the task registry (issue 31): real counts, label order, masked and labelled tests,
strict errors, pinned downloads."""

from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path

import datasets
import pytest
from conftest import ROOT

from hf_indosent.data import builders
from hf_indosent.data.builders import ChecksumError, DownloadError, MissingLabelsError, require_labels, sha256_of
from hf_indosent.data.indonlu import load_indonlu, load_task, task_features
from hf_indosent.data.parsing import NO_LABEL, DataFormatError
from hf_indosent.data.smsa import load_smsa
from hf_indosent.data.tasks import ASPECTS, CASA, EMOT, HOASA, SINGLE_LABEL, SMSA, TASKS, UPSTREAM_COMMIT, get_task

INDONLU_DIR = ROOT.parent / "shared" / "indonlu"
requires_indonlu = pytest.mark.skipif(
    not all((INDONLU_DIR / name / "train_preprocess.csv").is_file() for name in ("emot", "casa", "hoasa")),
    reason=f"IndoNLU EmoT/CASA/HoASA files not found under {INDONLU_DIR}",
)
FAMILY = ("emot", "casa", "hoasa")

TRAIN_LABEL_COUNTS = {  # ../shared/indonlu/README.md, all aspects together for CASA and HoASA
    "emot": {"anger": 881, "happy": 814, "sadness": 798, "fear": 519, "love": 509},
    "casa": {"neutral": 3785, "positive": 779, "negative": 296},
    "hoasa": {"neut": 18393, "neg": 3481, "pos": 947, "neg_pos": 9},
}
ROWS = {"emot": (3521, 440, 440), "casa": (810, 90, 180), "hoasa": (2283, 285, 286)}


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> dict[str, datasets.DatasetDict]:
    cache = tmp_path_factory.mktemp("family-cache")
    return {name: load_task(name, INDONLU_DIR / name, cache_dir=cache) for name in FAMILY}


def label_counts(split: datasets.Dataset, task) -> Counter:
    counts: Counter = Counter()
    for column in task.label_columns:
        counts.update(task.label_names[i] for i in split[column])
    return counts


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    buffer = io.StringIO(newline="")
    csv.writer(buffer, lineterminator="\n").writerows([header, *rows])
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def casa_folder(tmp_path: Path, train_rows: list[list[str]] | None = None, header: list[str] | None = None) -> Path:
    folder = tmp_path / "casa"
    folder.mkdir()
    columns = list(header or CASA.header)
    good = [["Mesin nya halus , irit .", "positive", "positive", "neutral", "neutral", "neutral", "neutral"]]
    write_csv(folder / "train_preprocess.csv", columns, train_rows or good * 3)
    write_csv(folder / "valid_preprocess.csv", list(CASA.header), good)
    return folder


# ------------------------------------------------------------------------------------------------------------------
# The registry


def test_registry_kinds_labels_and_aspects_in_indonlu_order():
    assert list(TASKS) == ["smsa", "emot", "casa", "hoasa"] and get_task("EmoT") is EMOT
    assert (SMSA.kind, EMOT.kind, CASA.kind, HOASA.kind) == (SINGLE_LABEL, SINGLE_LABEL, ASPECTS, ASPECTS)
    assert SMSA.label_names == ("positive", "neutral", "negative")
    assert EMOT.label_names == ("sadness", "anger", "love", "fear", "happy")
    assert CASA.label_names == ("negative", "neutral", "positive")
    assert HOASA.label_names == ("neg", "neut", "pos", "neg_pos")
    assert CASA.aspects == ("fuel", "machine", "others", "part", "price", "service")
    assert HOASA.label_columns == (
        "ac", "air_panas", "bau", "general", "kebersihan", "linen", "service", "sunrise_meal", "tv", "wifi",
    )  # fmt: skip
    assert EMOT.label_columns == SMSA.label_columns == ("label",)
    assert [task.source_text_column for task in (SMSA, EMOT, CASA, HOASA)] == [None, "tweet", "sentence", "review"]
    assert {task.text_column for task in TASKS.values()} == {"text"}
    assert HOASA.id2label[3] == "neg_pos" and EMOT.label2id["happy"] == 4
    assert {name: TASKS[name].rows["train"] for name in FAMILY} == {name: ROWS[name][0] for name in FAMILY}
    with pytest.raises(ValueError, match=r"unknown task 'hoas' \(did you mean 'hoasa'\?\)"):
        get_task("hoas")


def test_features_follow_the_registry():
    features = task_features("hoasa")
    assert list(features) == ["text", *HOASA.aspects]
    assert all(features[aspect].names == list(HOASA.label_names) for aspect in HOASA.aspects)
    assert task_features(SMSA) == datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["positive", "neutral", "negative"])}
    )


def test_downloads_are_pinned_and_the_labelled_test_is_not():
    for name in FAMILY:
        task = TASKS[name]
        assert not task.test_pinned and task.download_files["test"] == "test_preprocess_masked_label.csv"
        assert all(len(task.sha256[file]) == 64 for file in task.download_files.values())
    assert SMSA.test_pinned and SMSA.download_files["test"] == "test_preprocess.tsv"
    assert CASA.upstream_url("x.csv").endswith(f"{UPSTREAM_COMMIT}/dataset/casa_absa-prosa/x.csv")


# ------------------------------------------------------------------------------------------------------------------
# The real files


@requires_indonlu
def test_local_copies_match_the_pins():
    for name in FAMILY:
        for file, digest in TASKS[name].sha256.items():
            assert sha256_of(INDONLU_DIR / name / file) == digest, f"{name}/{file}"


@requires_indonlu
@pytest.mark.parametrize("name", FAMILY)
def test_real_counts_labels_and_masked_test(real, name):
    task, dataset = TASKS[name], real[name]
    assert tuple(dataset[split].num_rows for split in ("train", "validation", "test")) == ROWS[name]
    assert dataset["train"].features == task_features(task)
    assert label_counts(dataset["train"], task) == TRAIN_LABEL_COUNTS[name]
    assert all(set(dataset["test"][column]) == {NO_LABEL} for column in task.label_columns)  # placeholders
    require_labels(dataset["validation"], "validation")
    with pytest.raises(MissingLabelsError, match=rf"the {task.title} test file is masked, its '{task.placeholder}'"):
        require_labels(dataset["test"], "test")
    with pytest.raises(MissingLabelsError, match="predict --submission"):
        require_labels(dataset["test"].select(range(3)), "test")


@requires_indonlu
@pytest.mark.parametrize("name", FAMILY)
def test_real_texts_are_the_csv_texts(real, name):
    task = TASKS[name]
    for split, file in (("train", "train_preprocess.csv"), ("test", task.masked_test_file)):
        with open(INDONLU_DIR / name / file, encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert list(real[name][split]["text"]) == [row[task.source_text_column] for row in rows]
        if split == "train":
            first = {column: task.label_names[real[name][split][column][0]] for column in task.label_columns}
            assert first == {column: rows[0][column] for column in task.label_columns}


@requires_indonlu
def test_labelled_test_file_scores_the_test_split(tmp_path, cache_dir):
    """Upstream's labelled test_preprocess.csv in data_dir: preferred to the masked file, checked for structure."""
    folder = tmp_path / "casa"
    folder.mkdir()
    for file in ("train_preprocess.csv", "valid_preprocess.csv", CASA.masked_test_file):
        (folder / file).write_bytes((INDONLU_DIR / "casa" / file).read_bytes())
    with open(folder / CASA.masked_test_file, encoding="utf-8", newline="") as handle:
        masked = list(csv.reader(handle))
    labelled = [[text, *(CASA.label_names[(i + j) % 3] for j in range(6))] for i, (text, *_) in enumerate(masked[1:])]
    write_csv(folder / "test_preprocess.csv", masked[0], labelled)
    test = load_task("casa", folder, cache_dir=cache_dir)["test"]
    require_labels(test, "test")
    assert test.num_rows == 180 and list(test["text"]) == [row[0] for row in labelled]
    assert [test[aspect][4] for aspect in CASA.aspects] == [1, 2, 0, 1, 2, 0]

    write_csv(folder / "test_preprocess.csv", masked[0], labelled[:-1])  # not upstream's file: a row short
    with pytest.raises(DataFormatError, match=r"holds 179 examples, but upstream's labelled CASA test file has 180"):
        load_task("casa", folder, cache_dir=cache_dir)


@requires_indonlu
def test_pinned_download_and_a_tampered_file(tmp_path, cache_dir, monkeypatch):
    """The default source, with downloads served from the local copies: the masked test (pinned) is fetched, never
    the unpinned labelled one; a file whose bytes differ from its pin is refused."""
    served = tmp_path / "served"
    served.mkdir()
    for file in CASA.download_files.values():
        (served / file).write_bytes((INDONLU_DIR / "casa" / file).read_bytes())
    requested = []

    def fake_download(self, urls):
        requested.extend(urls.values())
        return {split: str(served / url.rsplit("/", 1)[1]) for split, url in urls.items()}

    monkeypatch.setattr(datasets.DownloadManager, "download", fake_download)
    dataset = load_task("casa", cache_dir=cache_dir)
    assert {split: dataset[split].num_rows for split in dataset} == {"train": 810, "validation": 90, "test": 180}
    assert sorted(url.rsplit("/", 1)[1] for url in requested) == sorted(CASA.download_files.values())
    assert all(f"{UPSTREAM_COMMIT}/dataset/casa_absa-prosa/" in url for url in requested)

    (served / "valid_preprocess.csv").write_bytes((served / "valid_preprocess.csv").read_bytes() + b"x,a,b,c,d,e,f\n")
    with pytest.raises(ChecksumError, match=r"sha256 mismatch for .*casa_absa-prosa/valid_preprocess\.csv"):
        load_task("casa", cache_dir=tmp_path / "other-cache")


def test_no_network_says_which_folder_to_use(cache_dir, monkeypatch):
    def offline(self, urls):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets.DownloadManager, "download", offline)
    with pytest.raises(DownloadError, match=r"emot_emotion-twitter/ .*\.\./shared/indonlu/emot"):
        load_task("emot", cache_dir=cache_dir)


# ------------------------------------------------------------------------------------------------------------------
# Strict parsing


def test_small_folder_loads_with_masked_test(tmp_path, cache_dir):
    folder = casa_folder(tmp_path)
    write_csv(folder / CASA.masked_test_file, list(CASA.header), [["Bagus .", *["neutral"] * 6]])
    dataset = load_indonlu("casa", folder, cache_dir=cache_dir)
    assert [dataset["train"][aspect][0] for aspect in CASA.aspects] == [2, 2, 1, 1, 1, 1]
    assert [dataset["test"][aspect][0] for aspect in CASA.aspects] == [NO_LABEL] * 6


@pytest.mark.parametrize(
    ("rows", "header", "line", "fragment"),
    [
        (None, ["text", *CASA.aspects], 1, r"does not match the expected columns \(missing \['sentence'\]; unexpected"),
        ([["ok", "positive", "neutral"]], None, 2, "expected 7 columns"),
        ([["ok", *["neutral"] * 5, "Positive"]], None, 2, r"unknown label 'Positive' in column 'service'.*'positive'"),
        ([["ok", *["neutral"] * 6], ["  ", *["neutral"] * 6]], None, 3, "empty text"),
    ],
    ids=["wrong-header", "column-count", "unknown-label", "empty-text"],
)
def test_bad_rows_name_file_and_line(tmp_path, cache_dir, rows, header, line, fragment):
    folder = casa_folder(tmp_path, rows, header)
    with pytest.raises(DataFormatError, match=fragment) as info:
        load_task("casa", folder, cache_dir=cache_dir)
    assert info.value.line == line and info.value.path == str(folder / "train_preprocess.csv")
    assert f"{folder / 'train_preprocess.csv'}, line {line}:" in str(info.value)
    assert not list(cache_dir.rglob("*.arrow"))  # nothing cached from a failed load


def test_emot_unknown_emotion_and_reordered_header(tmp_path, cache_dir):
    folder = tmp_path / "emot"
    folder.mkdir()
    write_csv(folder / "train_preprocess.csv", ["tweet", "label"], [["senang sekali", "happy"], ["sedih", "joy"]])
    write_csv(folder / "valid_preprocess.csv", ["label", "tweet"], [["anger", "kesal"]])
    with pytest.raises(DataFormatError, match=r"line 3: unknown label 'joy'.*labels are fixed by its task") as info:
        load_task("emot", folder, cache_dir=cache_dir)
    assert "in column" not in str(info.value)
    write_csv(folder / "train_preprocess.csv", ["tweet", "label"], [["senang sekali", "happy"], ["sedih", "sadness"]])
    dataset = load_task("emot", folder, cache_dir=cache_dir)  # columns are read by name: any order
    assert list(dataset["train"]["label"]) == [4, 0] and "test" not in dataset


def test_data_dir_must_hold_the_task_files(tmp_path, cache_dir):
    with pytest.raises(FileNotFoundError, match=r"train_preprocess\.csv"):
        load_task("hoasa", tmp_path, cache_dir=cache_dir)
    with pytest.raises(FileNotFoundError, match=r"\.\./shared/indonlu/hoasa"):
        load_task("hoasa", tmp_path / "nowhere", cache_dir=cache_dir)
    with pytest.raises(ValueError, match="no header"):
        load_indonlu("smsa", tmp_path, cache_dir=cache_dir)


def test_smsa_through_the_registry_is_load_smsa(tiny_smsa_dir, cache_dir):
    by_task = load_task("smsa", tiny_smsa_dir, cache_dir=cache_dir)
    direct = load_smsa(data_dir=tiny_smsa_dir, cache_dir=cache_dir)
    assert by_task["train"].to_dict() == direct["train"].to_dict() and by_task["train"].info.dataset_name == "smsa"
    assert builders.label_columns(by_task["test"]) == ["label"]
    with pytest.raises(MissingLabelsError, match=r"SmSA test file is masked, its 'neutral'.*test_preprocess\.tsv\."):
        require_labels(by_task["test"], "test")
