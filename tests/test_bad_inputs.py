"""The bad-input corpus: every kind of malformed data we know of, fed to the loader and to predict/evaluate.

Each case is decided deliberately: either it is valid and loads with every row intact (count and text verified), or
it fails with an error that names the file, the line and the fix. Tolerated on purpose: a UTF-8 byte-order mark,
Windows line endings, a missing final newline, unusual characters (NUL, U+2028, U+0085) inside a text. Everything
else that cannot be read without guessing is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from hf_indosent import cli
from hf_indosent.data.parsing import DataFormatError
from hf_indosent.data.smsa import load_smsa

ONE_MB_TEXT = "enak " * 209_716  # 1,048,580 characters on one line


@dataclass(frozen=True)
class Loads:
    """Valid: loads with exactly these texts and label ids."""

    texts: tuple[str, ...]
    labels: tuple[int, ...]


@dataclass(frozen=True)
class Fails:
    """Invalid: DataFormatError naming the file, this line (None: the whole file) and containing ``fragment``."""

    line: int | None
    fragment: str


# name -> (file name, bytes, extra load_smsa arguments, expected outcome). SmSA files are headerless text<TAB>label.
CORPUS: dict[str, tuple[str, bytes, dict, Loads | Fails]] = {
    # --- tolerated, every row intact
    "windows line endings": ("train.tsv", b"satu\tpositive\r\ndua\tnegative\r\n", {}, Loads(("satu", "dua"), (0, 2))),
    "utf-8 byte-order mark": ("train.tsv", b"\xef\xbb\xbfsatu\tpositive\n", {}, Loads(("satu",), (0,))),
    "no final newline": ("train.tsv", b"satu\tpositive\ndua\tneutral", {}, Loads(("satu", "dua"), (0, 1))),
    "quotes null NA verbatim": (
        "train.tsv",
        b"\"kata nya\tneutral\nnull\tneutral\nNA\tneutral\nnan\tneutral\nNone\tneutral\n'\tneutral\n",
        {},
        Loads(('"kata nya', "null", "NA", "nan", "None", "'"), (1, 1, 1, 1, 1, 1)),
    ),
    "surrounding spaces kept": ("train.tsv", b"  enak  \tpositive\n", {}, Loads(("  enak  ",), (0,))),
    "unicode separators inside text": (
        "train.tsv",
        "a\u2028b\x85c\x00d\tpositive\n".encode(),
        {},
        Loads(("a\u2028b\x85c\x00d",), (0,)),
    ),
    "1 MB single line": ("train.tsv", f"{ONE_MB_TEXT}\tpositive\n".encode(), {}, Loads((ONE_MB_TEXT,), (0,))),
    "csv with quoted newlines": (
        "train.csv",
        b'text,label\n"baris satu\nbaris dua",positive\n"koma, dan ""kutip""",negative\n',
        {"header": True},
        Loads(("baris satu\nbaris dua", 'koma, dan "kutip"'), (0, 2)),
    ),
    # --- refused: file, line and fix
    "missing label column": ("train.tsv", b"satu\tpositive\ndua\n", {}, Fails(2, "expected 2 columns")),
    "extra tab": ("train.tsv", b"satu\tdua\tpositive\n", {}, Fails(1, "found 3")),
    "unknown label": ("train.tsv", b"satu\tpositive\ndua\tsenang\n", {}, Fails(2, "unknown label 'senang'")),
    "mixed label case": ("train.tsv", b"satu\tNegative\n", {}, Fails(1, "did you mean 'negative'")),
    "label with trailing space": ("train.tsv", b"satu\tneutral \n", {}, Fails(1, "did you mean 'neutral'")),
    "empty text": ("train.tsv", b"\tpositive\n", {}, Fails(1, "empty text")),
    "whitespace-only text": ("train.tsv", b"satu\tpositive\n \t\tneutral\n", {}, Fails(2, "found 3")),
    "whitespace-only text, one tab": ("train.tsv", b"   \tneutral\n", {}, Fails(1, "empty text")),
    "blank line": ("train.tsv", b"satu\tpositive\n\ndua\tneutral\n", {}, Fails(2, "found 1")),
    "latin-1 bytes": ("train.tsv", b"satu\tpositive\ncaf\xe9\tpositive\n", {}, Fails(2, "not valid UTF-8")),
    "utf-16 file": ("train.tsv", "satu\tpositive\n".encode("utf-16"), {}, Fails(1, "not valid UTF-8")),
    "old mac line endings": ("train.tsv", b"satu\tpositive\rdua\tnegative\r", {}, Fails(1, "found 3")),
    "empty file": ("train.tsv", b"", {}, Fails(None, "file is empty")),
    "only newlines": ("train.tsv", b"\n\n", {}, Fails(None, "file is empty")),
    "header row in a headerless file": ("train.tsv", b"text\tlabel\nsatu\tpositive\n", {}, Fails(1, "header row")),
    "duplicate header names": ("train.csv", b"text,text\nsatu,positive\n", {"header": True}, Fails(1, "duplicate")),
    "header repeated inside the file": (
        "train.csv",
        b"text,label\nsatu,positive\ntext,label\n",
        {"header": True},
        Fails(3, "unknown label 'label'"),
    ),
    "header without the text column": (
        "train.csv",
        b"review,label\nsatu,positive\n",
        {"header": True},
        Fails(1, "text_column"),
    ),
    "unterminated csv quote": (
        "train.csv",
        b'text,label\n"satu,positive\n',
        {"header": True},
        Fails(2, "malformed CSV"),
    ),
}


def load_train(folder: Path, name: str, content: bytes, extra: dict, cache_dir: Path):
    path = folder / name
    path.write_bytes(content)
    options = {"header": False, **extra}
    return path, load_smsa(data_files={"train": path}, cache_dir=cache_dir, **options)["train"]


@pytest.mark.parametrize("case", list(CORPUS))
def test_loader_corpus(case, tmp_path, cache_dir):
    name, content, extra, expected = CORPUS[case]
    if isinstance(expected, Loads):
        _, train = load_train(tmp_path, name, content, extra, cache_dir)
        assert train.num_rows == len(expected.texts)
        assert tuple(train["text"]) == expected.texts
        assert tuple(train["label"]) == expected.labels
        return
    with pytest.raises(DataFormatError) as info:
        load_train(tmp_path, name, content, extra, cache_dir)
    assert info.value.path == str(tmp_path / name)
    assert info.value.line == expected.line
    message = str(info.value)
    assert expected.fragment in message
    assert message.startswith(f"{tmp_path / name}")
    assert message.endswith(f"{info.value.problem}. {info.value.fix}") and len(info.value.fix) > 10


def test_loader_corpus_covers_at_least_20_kinds():
    assert len(CORPUS) >= 20
    assert sum(isinstance(case[3], Fails) for case in CORPUS.values()) >= 15


def test_directory_and_missing_file(tmp_path, cache_dir):
    for path, fragment in ((tmp_path, "is a directory"), (tmp_path / "none.tsv", "does not exist")):
        with pytest.raises(DataFormatError, match=fragment) as info:
            load_smsa(data_files={"train": path}, cache_dir=cache_dir)
        assert info.value.path == str(path) and info.value.line is None and "path" in info.value.fix


# ---------------------------------------------------------------------------------------------------------------
# predict and evaluate


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    code = cli.main(argv)
    return code, capsys.readouterr().err


@pytest.mark.usefixtures("one_torch_thread")
def test_predict_file_corpus_keeps_every_row_in_place(tiny_classifier_dir, tmp_path, capsys):
    """One input file with every awkward line kind: a row out per row in, errors on their own rows."""
    lines = [
        b"\xef\xbb\xbfpertama enak",  # BOM on the first line: stripped
        b"kedua dengan crlf\r",
        b"",  # empty
        b"   ",  # whitespace only
        b"caf\xe9 latin-1",  # not UTF-8
        ONE_MB_TEXT.encode(),  # truncated to the model's limit
        b'"kutip" dan null',
        b"terakhir",
    ]
    source = tmp_path / "reviews.txt"
    source.write_bytes(b"\n".join(lines) + b"\n")
    output = tmp_path / "out.jsonl"
    code, err = run_cli(
        ["predict", "--model", str(tiny_classifier_dir), "--file", str(source), "--output", str(output)], capsys
    )
    assert code == 0
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [row["index"] for row in rows] == list(range(len(lines)))
    assert rows[0]["text"] == "pertama enak" and rows[1]["text"] == "kedua dengan crlf"
    assert rows[6]["text"] == '"kutip" dan null' and rows[7]["text"] == "terakhir"
    errors = [row["error"] for row in rows]
    assert errors[2] == errors[3] == "empty text"
    assert "line 5 is not valid UTF-8" in errors[4]
    assert [i for i, error in enumerate(errors) if error is None] == [0, 1, 5, 6, 7]
    assert all(row["label"] in {"positive", "neutral", "negative"} for row in rows if row["error"] is None)
    assert "3 of 8 rows could not be classified" in err


@pytest.mark.usefixtures("one_torch_thread")
def test_predict_refuses_what_it_cannot_read(tiny_classifier_dir, tmp_path, capsys):
    model = str(tiny_classifier_dir)
    broken = tmp_path / "broken.csv"
    broken.write_bytes(b'review\n"never closed\n')
    code, err = run_cli(["predict", "--model", model, "--file", str(broken), "--text_column", "review"], capsys)
    assert code == 1 and str(broken) in err and "line" in err
    no_column = tmp_path / "nocol.tsv"
    no_column.write_text("ulasan\nenak\n")
    code, err = run_cli(["predict", "--model", model, "--file", str(no_column), "--text_column", "review"], capsys)
    assert code == 1 and "has no column 'review'" in err and "--text_column" in err
    with pytest.raises(SystemExit):  # a directory is not a file: argument error before loading the model
        cli.main(["predict", "--model", model, "--file", str(tmp_path)])
    assert "is a directory (a folder), not a file" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    output = tmp_path / "empty.csv"
    code, _ = run_cli(["predict", "--model", model, "--file", str(empty), "--output", str(output)], capsys)
    assert code == 0 and output.read_text().splitlines() == [
        "index,text,label,score_positive,score_neutral,score_negative,error"
    ]


@pytest.mark.usefixtures("one_torch_thread")
def test_evaluate_file_corpus(tiny_classifier_dir, tmp_path, cache_dir, capsys):
    """evaluate reads files with the loader: tolerated quirks load, bad rows fail with file and line."""
    model = str(tiny_classifier_dir)
    good = tmp_path / "good.tsv"
    good.write_bytes(b"\xef\xbb\xbftext\tlabel\r\nenak sekali\tpositive\r\njelek\tnegative\r\n")
    out = tmp_path / "eval"
    argv = [
        "evaluate",
        "--model",
        model,
        "--file",
        str(good),
        "--output_dir",
        str(out),
        "--dataset_cache_dir",
        str(cache_dir),
    ]
    code, _ = run_cli(argv, capsys)
    assert code == 0 and json.loads((out / "good_results.json").read_text())["num_examples"] == 2
    for name, content, fragment in (
        ("mixed_case.tsv", b"text\tlabel\nenak\tPositive\n", "line 2: unknown label 'Positive'"),
        ("latin1.tsv", b"text\tlabel\ncaf\xe9\tpositive\n", "line 2: bytes"),
        ("no_label.tsv", b"text\nenak\n", "has no label column 'label'"),
    ):
        bad = tmp_path / name
        bad.write_bytes(content)
        argv = [
            "evaluate",
            "--model",
            model,
            "--file",
            str(bad),
            "--output_dir",
            str(out),
            "--dataset_cache_dir",
            str(cache_dir),
        ]
        code, err = run_cli(argv, capsys)
        assert code == 1 and str(bad) in err and fragment in err, (name, err)
