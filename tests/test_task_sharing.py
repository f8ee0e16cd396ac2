"""Sharing an IndoNLU task's model: the model card of an aspect model (CASA) and of EmoT, and the demo of an aspect
model (its per-aspect table, its task's examples and title), all offline."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: no phone-home from the tests

from hf_indosent.data.tasks import CASA, EMOT
from hf_indosent.inference.predictor import Predictor
from hf_indosent.modeling.aspects import TASK_KEY, aspect_label_names, aspects_of, task_of
from hf_indosent.modeling.loading import load_config
from hf_indosent.sharing.demo import DEFAULT_TITLE, EXAMPLES, build_app, metrics_markdown
from hf_indosent.sharing.model_card import TASK_CARDS, build_model_card
from hf_indosent.sharing.space import write_space

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.filterwarnings("ignore:::gradio.queueing"),  # gradio's own pandas deprecations, not ours
]

REPO_ID = "someone/indobert-casa"
CASA_EXAMPLES = [example["text"] for example in TASK_CARDS["casa"].examples]
PER_ASPECT = {  # a distinct F1 per aspect, so each table row can be told apart
    aspect: {"accuracy": 0.9, "f1": 0.51 + index / 100, "precision": 0.6, "recall": 0.55, "confusion": {}}
    for index, aspect in enumerate(CASA.aspects)
}
ASPECT_METRICS = {
    "best_epoch": 4,
    "epochs_completed": 5,
    "metric_for_best_model": "f1",
    "aspects": list(CASA.aspects),
    "validation": {"accuracy": 0.93, "f1": 0.8123, "precision": 0.8, "recall": 0.82, "loss": 0.4, "num_examples": 90},
    "validation_per_aspect": PER_ASPECT,
}


@pytest.fixture(scope="module")
def casa_run(tiny_aspect_classifier_dir, tmp_path_factory) -> Path:
    """A CASA training run folder: best/ whose config records the task (as training writes it), metrics.json."""
    run = tmp_path_factory.mktemp("casa-run")
    shutil.copytree(tiny_aspect_classifier_dir, run / "best")
    config_path = run / "best" / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config_path.write_text(json.dumps({**config, TASK_KEY: CASA.name}), encoding="utf-8")
    (run / "metrics.json").write_text(json.dumps(ASPECT_METRICS), encoding="utf-8")
    return run


@pytest.fixture(scope="module")
def predictor(casa_run) -> Predictor:
    return Predictor(casa_run / "best", backend="torch")


def card_parts(card: str) -> tuple[dict, str]:
    front, body = card.removeprefix("---\n").split("\n---\n", 1)
    return yaml.safe_load(front), body


def aspect_card(model_dir: Path, metrics: dict | None = ASPECT_METRICS) -> str:
    """The card as push builds it from the model's config."""
    config = load_config(model_dir)
    labels = aspect_label_names(config)
    return build_model_card(REPO_ID, labels, metrics, aspects=aspects_of(config), task=task_of(config))


# ---------------------------------------------------------------------------------------------------------------
# Model card


def test_aspect_card_lists_aspects_reports_each_and_turns_the_plain_widget_off(casa_run):
    meta, body = card_parts(aspect_card(casa_run / "best"))
    assert meta["inference"] is False and "widget" not in meta  # the widget would softmax all 18 outputs together
    assert {"aspect-based-sentiment-analysis", "casa"} <= set(meta["tags"])
    (entry,) = meta["model-index"]
    (result,) = entry["results"]
    assert result["task"] == {"type": "text-classification", "name": "Aspect-based Sentiment Analysis"}
    assert result["dataset"] == {
        "name": "CASA (IndoNLU)",
        "type": "indonlp/indonlu",
        "config": "casa",
        "split": "validation",
    }
    assert {metric["type"]: metric["value"] for metric in result["metrics"]}["f1"] == 0.8123  # the flattened F1

    assert "[CASA](https://github.com/IndoNLP/indonlu)" in body and CASA.description in body
    assert "## Aspects and labels" in body and "## Labels\n" not in body
    for head, aspect in enumerate(CASA.aspects):  # every aspect, its head and its outputs, in head order
        assert f"| {head} | {aspect} | {3 * head}-{3 * head + 2} |" in body
    for index, name in enumerate(CASA.label_names):
        assert f"| {index} | {name} |" in body
    assert "stock `BertForSequenceClassification`" in body and "18 outputs" in body
    assert "flattened macro F1" in body
    assert "| validation | 0.9300 | 0.8123 | 0.8000 | 0.8200 | 90 |" in body
    for aspect, scores in PER_ASPECT.items():
        assert f"| {aspect} | 0.9000 | {scores['f1']:.4f} | 0.6000 | 0.5500 |" in body
    rows = re.findall(r"^\| (\w+) \| 0\.9000 \|", body, flags=re.MULTILINE)
    assert rows == list(CASA.aspects)  # in the model's aspect order
    assert "The CASA test labels are masked" in body
    assert 'function_to_apply="none"' in body and "aspect_scores" in body
    assert "softmaxes all 18 outputs together" in body


def test_the_aspect_cards_code_reads_each_aspect_as_the_predictor_does(casa_run, predictor):
    """The card's snippet (a plain pipeline with function_to_apply="none", then a softmax per aspect) run on the local
    folder prints each aspect's label and score as hf_indosent's predictor gives them."""
    _, body = card_parts(aspect_card(casa_run / "best"))
    snippet = re.search(r"```python\n(.*?)```", body, flags=re.DOTALL).group(1)
    assert "pipeline(" in snippet
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(snippet.replace(repr(REPO_ID).replace("'", '"'), repr(str(casa_run / "best"))), {})
    (expected,) = predictor([CASA_EXAMPLES[0]])
    lines = [line.split() for line in printed.getvalue().splitlines()]
    assert [(aspect, label) for aspect, label, _ in lines] == [
        (aspect, answer["label"]) for aspect, answer in expected["aspects"].items()
    ]
    for (_, label, score), answer in zip(lines, expected["aspects"].values(), strict=True):
        assert float(score) == pytest.approx(answer["scores"][label], abs=1e-3)


def test_aspect_card_without_per_aspect_metrics_or_task_says_so(tiny_aspect_classifier_dir):
    metrics = {key: value for key, value in ASPECT_METRICS.items() if key != "validation_per_aspect"}
    meta, body = card_parts(aspect_card(tiny_aspect_classifier_dir, metrics))  # its config records no task
    assert meta["tags"] == ["aspect-based-sentiment-analysis"] and "datasets" not in meta
    assert "its task is not recorded" in body and "no per-aspect results" in body
    assert all(f"| {aspect} |" in body for aspect in CASA.aspects)


def test_emot_card_names_the_task_and_keeps_the_single_label_layout():
    metrics = {"validation": {"accuracy": 0.7, "f1": 0.69, "precision": 0.7, "recall": 0.68, "num_examples": 440}}
    recipe = {"model": {"model_name_or_path": "indobenchmark/indobert-base-p1"}, "data": {"task": "emot"}}
    meta, body = card_parts(build_model_card("someone/indobert-emot", EMOT.label_names, metrics, recipe))
    assert {"emotion-classification", "emot"} <= set(meta["tags"])
    result = meta["model-index"][0]["results"][0]
    assert (result["dataset"]["name"], result["dataset"]["config"]) == ("EmoT (IndoNLU)", "emot")
    assert result["task"]["name"] == "Emotion Classification"
    assert [example["example_title"] for example in meta["widget"]] == list(EMOT.label_names)  # a tweet per emotion
    assert "inference" not in meta
    assert "Indonesian emotion classifier (sadness / anger / love / fear / happy)" in body
    assert f"[EmoT](https://github.com/IndoNLP/indonlu) (IndoNLU: {EMOT.description})" in body
    assert "## Labels\n" in body and "| 4 | happy |" in body and "aspect" not in body.lower()
    assert "The EmoT test labels are masked" in body
    assert 'pipeline("text-classification", model="someone/indobert-emot", truncation=True, top_k=None)' in body
    smsa = build_model_card("someone/indobert-smsa", ["negative", "neutral", "positive"], metrics, {"data": {}})
    assert "Indonesian sentiment classifier" in smsa and "[SmSA]" in smsa and "EmoT" not in smsa


# ---------------------------------------------------------------------------------------------------------------
# Demo


def demo_function(app, name: str):
    (function,) = [block.fn for block in app.fns.values() if block.api_name == name]
    return function


@pytest.fixture(scope="module")
def casa_demo(casa_run):
    app = build_app(casa_run)
    yield app
    app.close()


def test_demo_of_an_aspect_model_answers_a_table_of_aspects(casa_demo, predictor):
    classify = demo_function(casa_demo, "classify")
    for text in CASA_EXAMPLES:
        (expected,) = predictor([text])
        table = classify(text)
        assert [row[:2] for row in table] == [
            [aspect, answer["label"]] for aspect, answer in expected["aspects"].items()
        ]
        for (_, label, score), answer in zip(table, expected["aspects"].values(), strict=True):
            assert score == pytest.approx(answer["scores"][label])
    (output,) = [block for block in casa_demo.blocks.values() if getattr(block, "elem_id", None) == "aspects"]
    assert type(output).__name__ == "Dataframe" and output.headers == ["aspect", "label", "score"]
    assert not [block for block in casa_demo.blocks.values() if type(block).__name__ == "Label"]  # no label bars


def test_demo_of_an_aspect_model_shows_its_tasks_examples_title_and_aspects(casa_demo, casa_run, predictor):
    config = casa_demo.get_config_file()
    texts = json.dumps(config)
    assert "Indonesian aspect-based sentiment (CASA)" in texts
    assert all(json.dumps(text)[1:-1] in texts for text in CASA_EXAMPLES)  # car reviews to click
    assert EXAMPLES[0] not in texts  # not the SmSA ones
    panel = metrics_markdown(casa_run, predictor.model_path, predictor.label_names, predictor.aspects)
    assert "aspects: fuel, machine, others, part, price, service" in panel and "(text, aspect) pair" in panel


def test_demo_file_tab_of_an_aspect_model_gives_each_aspects_label(casa_demo, predictor, tmp_path):
    import csv

    source = tmp_path / "reviews.txt"
    source.write_text("\n".join(CASA_EXAMPLES) + "\n", encoding="utf-8")
    output, _summary = demo_function(casa_demo, "classify_file")(str(source), "")
    with open(output, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row, expected in zip(rows, predictor(CASA_EXAMPLES), strict=True):
        assert {aspect: row[aspect] for aspect in CASA.aspects} == {
            aspect: answer["label"] for aspect, answer in expected["aspects"].items()
        }


def test_single_label_demo_keeps_its_bars_and_smsa_examples_and_a_space_names_the_aspect_task(
    tiny_classifier_dir, tmp_path
):
    app = build_app(tiny_classifier_dir)
    try:
        texts = json.dumps(app.get_config_file())
        assert DEFAULT_TITLE in texts and "Examples (SmSA style)" in texts
        assert [block for block in app.blocks.values() if type(block).__name__ == "Label"]
        assert isinstance(demo_function(app, "classify")(EXAMPLES[0]), dict)  # scores per label, for the bars
    finally:
        app.close()
    space = write_space(tmp_path / "space", REPO_ID, task="casa")
    readme = (space / "README.md").read_text(encoding="utf-8")
    assert "title: Indonesian aspect-based sentiment (CASA)" in readme
    assert f"IndoNLU CASA, {CASA.description}, with [{REPO_ID}]" in readme
    assert "title=None" in (space / "app.py").read_text(encoding="utf-8")  # the page takes its title from the model
