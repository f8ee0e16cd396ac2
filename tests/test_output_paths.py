"""Outputs never replace what a run reads, and a path that cannot be written is refused before the work.

Every command that writes (predict's --output and --submission, the --output_dir of train, evaluate, baseline and
adapt) is checked against every input it reads: the texts, the data folder or files, the model folder. Refused with
exit 1 and one line naming both paths; the input's bytes are unchanged.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import cli_args

from hf_indosent import cli


def snapshot(*paths: Path) -> dict[str, bytes]:
    files = [file for path in paths for file in ([path] if path.is_file() else sorted(path.rglob("*")))]
    return {str(file): file.read_bytes() for file in files if file.is_file()}


def refused(argv: list[str], capsys, *needles: str) -> str:
    code = cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1, err
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert all(needle in err[0] for needle in needles), err
    return err[0]


@pytest.fixture
def model_copy(tiny_classifier_dir, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_classifier_dir, tmp_path / "model"))


@pytest.mark.parametrize("name", ["texts.txt", "texts.jsonl", "texts.csv"])
@pytest.mark.parametrize("resumable", [False, True])
def test_predict_output_onto_its_own_input_file_is_refused(model_copy, tmp_path, capsys, name, resumable):
    texts = tmp_path / name
    texts.write_text(
        {
            "texts.txt": "enak sekali\njelek\n",
            "texts.jsonl": '{"text": "enak"}\n{"text": "jelek"}\n',
            "texts.csv": "text\nenak\njelek\n",
        }[name],
        encoding="utf-8",
    )
    link = tmp_path / f"link-{name}"
    link.symlink_to(texts)
    before = snapshot(texts)
    column = {"texts.csv": ["--text_column", "text"], "texts.txt": ["--format", "jsonl"]}.get(name, [])
    for output in (texts, link, tmp_path / "." / name):  # the same file by another spelling or through a link
        argv = ["predict", "--model", str(model_copy), "--file", str(texts), *column, "--output", str(output)]
        refused(argv + ["--resumable"] * resumable, capsys, f"--output {str(output)!r}", "--file", "choose another")
    assert snapshot(texts) == before


def test_predict_output_onto_a_file_of_the_model_folder_is_refused(model_copy, tmp_path, capsys):
    texts = tmp_path / "texts.txt"
    texts.write_text("enak\n", encoding="utf-8")
    before = snapshot(model_copy)
    for name in ("config.json", "tokenizer.json"):
        output = model_copy / name
        argv = ["predict", "--model", str(model_copy), "--file", str(texts), "--output", str(output), "--format", "csv"]
        refused(argv, capsys, "is a file of --model", str(model_copy))
    assert snapshot(model_copy) == before
    # a new file inside the model folder replaces nothing: allowed
    assert (
        cli.main(["predict", "--model", str(model_copy), "--file", str(texts), "--output", str(model_copy / "p.csv")])
        == 0
    )


def test_submission_onto_the_data_it_predicts_is_refused(model_copy, tiny_smsa_dir, tmp_path, capsys, cache_dir):
    data = Path(shutil.copytree(tiny_smsa_dir, tmp_path / "data"))
    before = snapshot(data)
    for name in ("test_preprocess_masked_label.tsv", "train_preprocess.zip"):  # the file, or where its zip goes
        submission = data / name.replace(".zip", ".tsv")
        argv = ["predict", "--model", str(model_copy), "--submission", str(submission), "--data_dir", str(data)]
        refused([*argv, "--dataset_cache_dir", str(cache_dir)], capsys, "--data_dir", "choose another")
    assert snapshot(data) == before


def test_predict_output_that_is_a_folder_or_under_a_file_is_refused_naming_the_user_s_path(
    model_copy, tmp_path, capsys
):
    texts = tmp_path / "texts.txt"
    texts.write_text("enak\n", encoding="utf-8")
    folder = tmp_path / "results.jsonl"
    folder.mkdir()
    line = refused(
        ["predict", "--model", str(model_copy), "--texts", "enak", "--output", str(folder)], capsys, "is a folder"
    )
    assert ".tmp" not in line
    under_file = texts / "out" / "p.jsonl"
    refused(
        ["predict", "--model", str(model_copy), "--file", str(texts), "--output", str(under_file)],
        capsys,
        f"{str(texts)!r} is a file, not a folder",
    )
    assert not list(tmp_path.glob("**/.*.tmp"))


def test_train_output_dir_onto_its_model_or_data_folder_is_refused(tiny_model_dir, tiny_smsa_dir, tmp_path, capsys):
    model = Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))
    data = Path(shutil.copytree(tiny_smsa_dir, tmp_path / "data"))
    before = snapshot(model, data)
    cache = tmp_path / "cache"
    for output_dir, needle in ((model, "--model_name_or_path"), (data, "--data_dir")):
        for overwrite in ([], ["--overwrite_output_dir", "true"]):
            argv = ["train", *cli_args(model, data, output_dir, cache), *overwrite]
            refused(argv, capsys, f"--output_dir {str(output_dir)!r} is {needle}")
    assert snapshot(model, data) == before
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine", encoding="utf-8")
    for output_dir in (a_file, a_file / "run"):
        refused(["train", *cli_args(model, data, output_dir, cache)], capsys, str(a_file))
    assert a_file.read_text(encoding="utf-8") == "mine"


def test_overwriting_the_run_that_holds_the_starting_model_is_refused(tiny_model_dir, tiny_smsa_dir, tmp_path, capsys):
    """--model_name_or_path runs/a/best --output_dir runs/a --overwrite_output_dir would delete the model it loads."""
    run = tmp_path / "run"
    (run / "best").parent.mkdir()
    shutil.copytree(tiny_model_dir, run / "best")
    (run / "metrics.json").write_text("{}", encoding="utf-8")
    before = snapshot(run)
    argv = ["train", *cli_args(run / "best", tiny_smsa_dir, run, tmp_path / "cache"), "--overwrite_output_dir", "true"]
    refused(argv, capsys, "--model_name_or_path", "which --overwrite_output_dir would delete")
    assert snapshot(run) == before


def test_evaluate_baseline_and_adapt_check_their_output_folder_first(
    model_copy, tiny_model_dir, tiny_smsa_dir, tmp_path, capsys, cache_dir, monkeypatch
):
    import hf_indosent.inference.evaluate as evaluation

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded before the output folder was checked")

    monkeypatch.setattr(evaluation, "load_predictor", never)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine", encoding="utf-8")
    common = ["--data_dir", str(tiny_smsa_dir), "--dataset_cache_dir", str(cache_dir)]
    refused(
        ["evaluate", "--model", str(model_copy), *common, "--output_dir", str(a_file / "x")], capsys, "not a folder"
    )
    refused(["evaluate", "--model", str(model_copy), *common, "--output_dir", "/proc/x"], capsys, "/proc/x")
    data = Path(shutil.copytree(tiny_smsa_dir, tmp_path / "data"))
    before = snapshot(data)
    baseline = ["baseline", "--data_dir", str(data), "--dataset_cache_dir", str(cache_dir)]
    refused([*baseline, "--output_dir", str(data), "--overwrite_output_dir", "true"], capsys, "is --data_dir")
    adapt = ["adapt", "--model_name_or_path", str(model_copy), "--data_dir", str(data)]
    refused([*adapt, "--output_dir", str(model_copy)], capsys, "is --model_name_or_path")
    assert snapshot(data) == before


def test_a_run_refused_half_way_leaves_no_folder_it_made(model_copy, tiny_smsa_dir, tmp_path, capsys, cache_dir):
    """evaluate and predict make their output folders before the work (so one that cannot be made fails first); a run
    that then fails on its inputs removes them again, however deep, and keeps folders that existed or hold files."""
    kept = tmp_path / "kept"
    kept.mkdir()
    no_label = tmp_path / "no_label.csv"
    no_label.write_text("text\nenak\n", encoding="utf-8")
    common = ["--model", str(model_copy), "--dataset_cache_dir", str(cache_dir)]
    runs = {
        "masked test split": ["evaluate", *common, "--data_dir", str(tiny_smsa_dir), "--split", "test"],
        "file without labels": ["evaluate", *common, "--file", str(no_label), "--header", "true"],
    }
    for what, argv in runs.items():
        assert cli.main([*argv, "--output_dir", str(kept / "a" / "b" / "eval")]) == 1, what
        assert "Traceback" not in capsys.readouterr().err
        assert list(kept.iterdir()) == [], what
    missing_column = ["predict", "--model", str(model_copy), "--file", str(no_label), "--text_column", "review"]
    assert cli.main([*missing_column, "--output", str(kept / "c" / "d" / "out.csv")]) == 1
    assert "review" in capsys.readouterr().err
    assert list(kept.iterdir()) == []


def test_made_folder_removes_only_the_empty_folders_it_made(tmp_path):
    from hf_indosent.core.files import made_folder

    with pytest.raises(KeyboardInterrupt), made_folder(tmp_path / "a" / "b" / "c") as folder:
        (folder.parent / "note.txt").write_text("mine", encoding="utf-8")  # written into b during the run
        raise KeyboardInterrupt
    assert sorted(path.name for path in tmp_path.rglob("*")) == ["a", "b", "note.txt"]
    with made_folder(tmp_path / "x" / "y") as folder:
        pass
    assert folder.is_dir()
