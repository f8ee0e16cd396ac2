"""The docs' predict, evaluate, export, submission and push commands run as written (tiny model, no Hub).

Every ``hf-indosent`` command of README.md and docs/*.md that uses the quickstart's run folder runs here, in a
temporary folder holding the tiny model as that run and the shipped example files; the others (a GPU, the Hub, a
cluster, the demo's server) are checked against their --help by tests/test_readme.py.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shlex
import shutil
import sys
import zipfile
from pathlib import Path

import datasets
import pytest
from huggingface_hub import HfApi
from huggingface_hub.hf_api import RepoUrl
from test_readme import doc_commands

from hf_indosent import cli
from hf_indosent.data.tasks import CASA_ASPECTS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[1]
RUN = "outputs/smsa-minilm-vocab-tapt"


def inference_commands() -> list[str]:
    """The ``hf-indosent`` lines of the docs' bash blocks (README.md, then docs/*.md), each once."""
    return [command for command in doc_commands() if "hf-indosent " in command]


@pytest.fixture
def uploads(monkeypatch) -> dict[str, list[str]]:
    """What the docs' push commands would upload, per repository: the Hub calls answered here, a token set."""
    monkeypatch.setenv("HF_TOKEN", "hf_FAKEreadmeToken000")
    uploaded: dict[str, list[str]] = {}
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **_: RepoUrl(f"https://huggingface.co/{repo_id}"))
    monkeypatch.setattr(
        HfApi,
        "create_commit",
        lambda self, repo_id, operations, **_: uploaded.setdefault(repo_id, [op.path_in_repo for op in operations]),
    )
    monkeypatch.setattr(
        HfApi,
        "upload_folder",
        lambda self, repo_id, folder_path, **_: uploaded.setdefault(repo_id, sorted(os.listdir(folder_path))),
    )
    return uploaded


def test_readme_inference_commands_run_as_written(tmp_path, monkeypatch, tiny_classifier_dir, tiny_smsa_dir, uploads):
    commands = inference_commands()
    shutil.copytree(tiny_classifier_dir, tmp_path / RUN / "best")
    shutil.copytree(ROOT / "examples", tmp_path / "examples")  # the shipped example files, used as written
    rows = (ROOT / "examples" / "reviews.txt").read_text(encoding="utf-8").splitlines()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))

    ran = set()
    for command in commands:
        if shlex.split(command)[1] in ("demo", "serve") or RUN not in command:  # servers: started by their tests
            continue  # a server that blocks (tests/test_demo.py clicks through it); GPU, Hub and cluster examples
        if "|" in command:  # `cat FILE | hf-indosent ...`: the file becomes stdin
            source, command = command.split("|")
            data = Path(shlex.split(source)[1]).read_bytes()
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
        argv = shlex.split(command.replace("../shared/smsa", str(tiny_smsa_dir)), comments=True)
        assert argv[0] == "hf-indosent"
        assert cli.main(argv[1:]) == 0, command
        ran.add(argv[1])

    assert ran == {"predict", "evaluate", "push", "export"}

    assert (tmp_path / "predictions.parquet").is_file()
    assert len((tmp_path / "resumable" / "predictions.csv").read_text(encoding="utf-8").splitlines()) == len(rows) + 1
    assert len((tmp_path / "predictions.jsonl").read_text(encoding="utf-8").splitlines()) == len(rows)  # from stdin
    assert len((tmp_path / "predictions.csv").read_text(encoding="utf-8").splitlines()) == len(rows) + 1
    assert json.loads((tmp_path / RUN / "eval" / "validation_results.json").read_text())["num_examples"] == 45
    assert json.loads((tmp_path / "eval" / "my_reviews_results.json").read_text())["num_examples"] == len(rows)
    assert len((tmp_path / "submission" / "pred.txt").read_text().splitlines()) == 21 + 1
    with zipfile.ZipFile(tmp_path / "submission" / "pred.zip") as bundle:
        assert bundle.namelist() == ["pred.txt"]
    assert "README.md" in uploads["your-user/indobert-smsa"]
    assert uploads["your-user/smsa-demo"] == ["README.md", "app.py", "requirements.txt"]  # push --space


CASA_RUN = "outputs/casa-minilm-vocab-tapt"


def test_the_tasks_page_commands_run_as_written_on_an_aspect_model(
    tmp_path, monkeypatch, tiny_aspect_classifier_dir, tiny_casa_dir, uploads
):
    """docs/tasks.md's predict, evaluate, submission and push commands on a tiny CASA model in the page's run folder."""
    best = shutil.copytree(tiny_aspect_classifier_dir, tmp_path / CASA_RUN / "best")
    config = json.loads((best / "config.json").read_text(encoding="utf-8"))
    (best / "config.json").write_text(json.dumps({**config, "indonlu_task": "casa"}), encoding="utf-8")  # as trained
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))
    page = [command for command in inference_commands() if CASA_RUN in command]
    ran = []
    for command in page:
        argv = shlex.split(command.replace("../shared/indonlu/casa", str(tiny_casa_dir)), comments=True)
        if argv[1] == "serve":
            continue  # a server that blocks: tests/test_task_serving.py
        assert cli.main(argv[1:]) == 0, command
        ran.append(argv[1])

    assert sorted(ran) == ["evaluate", "predict", "predict", "push"]
    with open(tmp_path / "casa.csv", encoding="utf-8", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert [column for column in row if column in CASA_ASPECTS] == list(CASA_ASPECTS) and not row["error"]
    report = json.loads((tmp_path / CASA_RUN / "eval" / "validation_results.json").read_text())
    assert report["num_examples"] == 30 and set(report["per_aspect"]) == set(CASA_ASPECTS)
    submission = (tmp_path / "submission-casa" / "pred.txt").read_text().splitlines()
    assert submission[0] == "index," + ",".join(CASA_ASPECTS) and len(submission) == 12 + 1
    assert "README.md" in uploads["your-user/minilm-casa"]
