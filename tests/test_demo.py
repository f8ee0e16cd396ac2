"""The demo: the app served on a loopback port and called through gradio_client and a real headless Chromium; the
Space folder and its push, all offline."""

from __future__ import annotations

import ast
import csv
import json
import os
import shutil
import socket
import sys
from pathlib import Path

import pytest
import yaml

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: no phone-home from the tests

from hf_indosent.cli import run_command
from hf_indosent.core.arguments import parse_args
from hf_indosent.data.parsing import LABEL_NAMES
from hf_indosent.inference.predictor import Predictor
from hf_indosent.sharing import demo as demo_module
from hf_indosent.sharing import hub as hub_module
from hf_indosent.sharing.demo import DemoArguments, build_app, headline_metrics, launch
from hf_indosent.sharing.hub import HubPushError
from hf_indosent.sharing.model_card import build_model_card
from hf_indosent.sharing.space import push_space, write_space
from tests.conftest import FAKE_TOKEN

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.filterwarnings("ignore:::gradio.queueing"),  # gradio's own pandas deprecations, not ours
]

BROWSER_REQUIRED_ENV = "HF_INDOSENT_REQUIRE_BROWSER"
"""Set to 1 (as .ci/run does) to fail on a missing Chromium; elsewhere the browser test is skipped, saying why."""
SCREENSHOT_ENV = "HF_INDOSENT_SCREENSHOT"
"""Also save the browser test's screenshot here (docs/demo.png, shown in docs/sharing.md)."""
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
)
METRICS = {"best_epoch": 2, "validation": {"accuracy": 0.875, "f1": 0.8612, "precision": 0.8701, "recall": 0.8555}}
SPACE_ID, MODEL_ID = "someone/smsa-demo", "someone/indobert-smsa"


@pytest.fixture(scope="module")
def run_dir(tiny_classifier_dir, tmp_path_factory) -> Path:
    """A training run folder as `hf-indosent train` leaves it: best/ and metrics.json beside it."""
    run = tmp_path_factory.mktemp("demo-run")
    shutil.copytree(tiny_classifier_dir, run / "best")
    (run / "metrics.json").write_text(json.dumps(METRICS), encoding="utf-8")
    return run


@pytest.fixture(scope="module")
def predictor(run_dir) -> Predictor:
    """The CLI's predict path, to compare the page's answers with."""
    return Predictor(run_dir)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(run_dir):
    """The demo app on a loopback port, closed when the module's tests are done."""
    app = build_app(run_dir)
    url = launch(app, port=free_port(), block=False)
    yield url
    app.close()


@pytest.fixture(scope="module")
def client(server, tmp_path_factory):
    from gradio_client import Client

    return Client(server, verbose=False, analytics_enabled=False, download_files=tmp_path_factory.mktemp("downloads"))


def classify_file(client, path: Path, column: str = "") -> list[dict[str, str]]:
    from gradio_client import handle_file

    output, _summary = client.predict(handle_file(str(path)), column, api_name="/classify_file")
    with open(output, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def scores_of(answer: dict) -> dict[str, float]:
    return {item["label"]: item["confidence"] for item in answer["confidences"]}


def test_server_listens_on_loopback_only(server):
    assert server.startswith("http://127.0.0.1:")


def test_text_tab_gives_the_predictors_scores_for_every_label(client, predictor):
    for text in demo_module.EXAMPLES[:3]:
        answer = client.predict(text, api_name="/classify")
        (expected,) = predictor([text])
        assert answer["label"] == expected["label"]
        assert set(scores_of(answer)) == set(LABEL_NAMES)
        assert scores_of(answer) == pytest.approx(expected["scores"])


def test_empty_or_huge_text_is_a_message_and_the_server_keeps_working(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="The text box is empty"):
        client.predict("   ", api_name="/classify")
    with pytest.raises(AppError, match=f"at most {demo_module.MAX_TEXT_CHARS:,}"):
        client.predict("bagus " * demo_module.MAX_TEXT_CHARS, api_name="/classify")
    assert client.predict("enak", api_name="/classify")["label"] in LABEL_NAMES


def test_file_of_lines_comes_back_in_input_order_with_errors_in_their_rows(client, predictor, tmp_path):
    texts = ["makanan nya enak sekali .", "pelayanan nya lambat dan kasar .", "", "rapat partai besok ."]
    path = tmp_path / "reviews.txt"
    path.write_bytes(
        b"\n".join([*(text.encode() for text in texts[:2]), b"caf\xe9 latin-1", *(t.encode() for t in texts[2:])])
    )
    rows = classify_file(client, path)
    assert [row["index"] for row in rows] == ["0", "1", "2", "3", "4"]
    assert "not valid UTF-8" in rows[2]["error"] and rows[2]["label"] == ""
    assert rows[3]["error"] == "empty text"
    good = [0, 1, 4]
    expected = predictor([rows[index]["text"] for index in good])
    assert [rows[index]["label"] for index in good] == [result["label"] for result in expected]
    assert [f"score_{name}" for name in predictor.label_names] == list(rows[0])[3:-1]
    assert client.predict("enak", api_name="/classify")["label"] in LABEL_NAMES  # still serving


def test_file_with_a_csv_column(client, predictor, tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text('id,review\n1,"enak , murah"\n2,kotor dan mahal\n', encoding="utf-8")
    rows = classify_file(client, path, "review")
    assert [row["text"] for row in rows] == ["enak , murah", "kotor dan mahal"]
    assert [row["label"] for row in rows] == [
        result["label"] for result in predictor(["enak , murah", "kotor dan mahal"])
    ]


def test_bad_files_are_messages_not_crashes(client, tmp_path, monkeypatch):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    binary = tmp_path / "photo.txt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    cases = {
        "looks like a binary file": (binary, ""),
        "has no column 'review'": (tmp_path / "texts.tsv", "review"),
        f"more than {demo_module.MAX_FILE_ROWS:,} rows": (tmp_path / "many.txt", ""),
        "is empty": (tmp_path / "empty.txt", ""),
    }
    (tmp_path / "texts.tsv").write_text("sentence\tlabel\nenak\tpositive\n", encoding="utf-8")
    (tmp_path / "many.txt").write_text("enak\n" * (demo_module.MAX_FILE_ROWS + 1), encoding="utf-8")
    (tmp_path / "empty.txt").write_bytes(b"")
    for message, (path, column) in cases.items():
        with pytest.raises(AppError, match=message):
            client.predict(handle_file(str(path)), column, api_name="/classify_file")
    monkeypatch.setattr(demo_module, "MAX_FILE_BYTES", 8)  # the app's own check, for launches without a server limit
    with pytest.raises(AppError, match="the demo takes at most 0 MB"):
        client.predict(handle_file(str(tmp_path / "texts.tsv")), "sentence", api_name="/classify_file")
    monkeypatch.undo()
    assert classify_file(client, tmp_path / "texts.tsv", "sentence")[0]["text"] == "enak"


def test_upload_over_the_server_limit_is_refused(server, client, tmp_path):
    import httpx
    from gradio_client import handle_file

    big = tmp_path / "big.txt"
    big.write_bytes(b"enak\n" * (demo_module.MAX_FILE_BYTES // 5 + 1))
    with pytest.raises(ValueError, match=f"exceeds the maximum file size of {demo_module.MAX_FILE_BYTES} bytes"):
        client.predict(handle_file(str(big)), "", api_name="/classify_file")  # the client reads the server's limit
    with open(big, "rb") as handle:  # and the server refuses it itself, before it is stored
        response = httpx.post(f"{server}gradio_api/upload", files={"files": handle}, timeout=30)
    assert response.status_code == 413
    assert client.predict("enak", api_name="/classify")["label"] in LABEL_NAMES


def test_headline_metrics_of_a_run_and_of_an_unreachable_hub_model(predictor):
    splits, source = headline_metrics(predictor.model_path)
    assert splits == {"validation": METRICS["validation"]}
    assert source == "from metrics.json, best epoch 2"
    splits, source = headline_metrics(MODEL_ID)  # HF_HUB_OFFLINE=1 (conftest): fails softly
    assert splits == {}
    assert source.startswith(f"no metrics: the model card of {MODEL_ID} could not be loaded")


def test_headline_metrics_of_a_hub_model_come_from_its_model_index(monkeypatch):
    from huggingface_hub import ModelCard

    card = ModelCard(build_model_card(MODEL_ID, LABEL_NAMES, METRICS))  # what `hf-indosent push` uploads
    monkeypatch.setattr(ModelCard, "load", classmethod(lambda cls, repo_id: card))
    assert headline_metrics(MODEL_ID) == ({"validation": METRICS["validation"]}, f"from the model card of {MODEL_ID}")


def test_browser_types_a_text_and_sees_the_label(server, predictor, tmp_path):
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        reason = "Chromium and chromedriver are not installed (apt-get install chromium chromium-driver to run it)"
        if os.environ.get(BROWSER_REQUIRED_ENV) == "1":
            pytest.fail(f"{reason}; {BROWSER_REQUIRED_ENV}=1 requires them")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    text = "pelayanan nya lambat dan kasar ."
    (expected,) = predictor([text])
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    try:
        driver.get(server)
        wait = WebDriverWait(driver, 30)
        box = wait.until(expected_conditions.element_to_be_clickable((By.CSS_SELECTOR, "#input-text textarea")))
        box.send_keys(text)
        driver.find_element(By.ID, "classify").click()
        wait.until(expected_conditions.text_to_be_present_in_element((By.ID, "sentiment"), expected["label"]))
        shown = driver.find_element(By.ID, "sentiment").text
        assert all(name in shown for name in LABEL_NAMES)  # a bar per class, the model's own names
        assert "0.875" in driver.find_element(By.TAG_NAME, "body").text  # the run's validation accuracy
        resources = driver.execute_script("return performance.getEntriesByType('resource').map(entry => entry.name)")
        assert [url for url in resources if not url.startswith(server)] == []  # no font, script or call off the box
        screenshot = tmp_path / "demo.png"
        assert driver.save_screenshot(str(screenshot))
    finally:
        driver.quit()
    if os.environ.get(SCREENSHOT_ENV):
        Path(os.environ[SCREENSHOT_ENV]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(screenshot, os.environ[SCREENSHOT_ENV])


def test_space_folder_runs_the_same_app(tmp_path):
    import gradio

    folder = write_space(tmp_path / "space", MODEL_ID, title="SmSA demo")
    assert sorted(path.name for path in folder.iterdir()) == ["README.md", "app.py", "requirements.txt"]
    readme = (folder / "README.md").read_text(encoding="utf-8")
    _, front, body = readme.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and meta["models"] == [MODEL_ID]
    assert meta["sdk_version"] == gradio.__version__ and meta["title"] == "SmSA demo"
    assert MODEL_ID in body
    app = ast.parse((folder / "app.py").read_text(encoding="utf-8"))
    imports = [node for node in app.body if isinstance(node, ast.ImportFrom)]
    assert [(node.module, [alias.name for alias in node.names]) for node in imports] == [
        ("hf_indosent.sharing.demo", ["MAX_FILE_BYTES", "build_app"])
    ]
    assert len(app.body) == 3 and MODEL_ID in ast.unparse(app.body[2])  # docstring, import, build_app(...).launch()
    requirements = (folder / "requirements.txt").read_text(encoding="utf-8").splitlines()
    assert {"hf_indosent", f"gradio=={gradio.__version__}"} <= set(requirements)
    with pytest.raises(ValueError, match="OWNER/NAME"):
        write_space(tmp_path / "other", "outputs/run/best")  # a Space loads its model from the Hub


def test_push_space_without_token_creates_nothing(monkeypatch):
    from huggingface_hub import HfApi

    calls = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, *args, **kwargs: calls.append(args))
    monkeypatch.setattr(hub_module, "get_token", lambda: None)
    with pytest.raises(HubPushError, match="set HF_TOKEN or run `hf auth login`"):
        push_space(SPACE_ID, MODEL_ID)
    with pytest.raises(ValueError, match="OWNER/NAME"):
        push_space("no-slash", MODEL_ID, token=FAKE_TOKEN)
    assert calls == []


def test_push_space_creates_a_gradio_space_and_uploads_the_folder(monkeypatch):
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoUrl

    calls: dict = {}

    def create_repo(self, repo_id, **kwargs):
        calls["create_repo"] = {"repo_id": repo_id, "token": self.token, **kwargs}
        return RepoUrl(f"https://huggingface.co/spaces/{repo_id}")

    def upload_folder(self, **kwargs):
        files = {path.name: path.read_text(encoding="utf-8") for path in Path(kwargs["folder_path"]).iterdir()}
        calls["upload_folder"] = {**kwargs, "files": files}

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    url = push_space(SPACE_ID, MODEL_ID)
    assert url == f"https://huggingface.co/spaces/{SPACE_ID}"
    assert calls["create_repo"] == {
        "repo_id": SPACE_ID,
        "token": FAKE_TOKEN,
        "repo_type": "space",
        "space_sdk": "gradio",
        "private": False,
        "exist_ok": True,
    }
    upload = calls["upload_folder"]
    assert upload["repo_id"] == SPACE_ID and upload["repo_type"] == "space"
    assert sorted(upload["files"]) == ["README.md", "app.py", "requirements.txt"]
    assert "build_app('someone/indobert-smsa'" in upload["files"]["app.py"]
    assert FAKE_TOKEN not in "".join(upload["files"].values())


def test_gradio_is_imported_only_inside_functions():
    tree = ast.parse(Path(demo_module.__file__).read_text(encoding="utf-8"))
    top_level = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
    names = {alias.name for node in top_level for alias in node.names} | {
        node.module for node in top_level if isinstance(node, ast.ImportFrom)
    }
    assert not {name for name in names if name and name.split(".")[0] in ("gradio", "gradio_client")}


def test_cli_run_serves_on_loopback_unless_asked(monkeypatch, run_dir):
    served = {}
    monkeypatch.setattr(demo_module, "launch", lambda app, **options: served.update(options))
    (args,) = parse_args([DemoArguments], ["--model", str(run_dir)], prog="hf-indosent demo")
    assert demo_module.cli_run(args) == 0
    assert served == {"host": "127.0.0.1", "port": None, "share": False}


def test_cli_without_gradio_says_how_to_install_in_one_line(monkeypatch, run_dir, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # makes `import gradio` raise ImportError
    args = DemoArguments(model=str(run_dir))
    assert run_command("hf-indosent demo", lambda: demo_module.cli_run(args)) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith('hf-indosent demo: error: gradio is not installed: pip install -e ".[demo]"')


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "70000"], "--port 70000 is not a TCP port: use 1..65535"),
        (["--host", " "], "--host is empty: use 127.0.0.1"),
        (["--model", ""], "--model is empty: pass a training run folder"),
    ],
)
def test_demo_arguments_name_the_bad_value(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args([DemoArguments], ["--model", "someone/model", *argv], prog="hf-indosent demo")
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
