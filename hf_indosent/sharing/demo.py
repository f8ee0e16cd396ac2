"""A demo people can click: ``hf-indosent demo`` (a local Gradio app) and the Hugging Face Space that runs the same app.

One page: a text tab (type or pick an example, see a bar per label with the model's own label names; for an aspect
model, CASA or HoASA, a table of each aspect's label and score) and a file tab (one text per line, or a CSV/TSV column
with a header; returns a CSV in input order), with the model's headline metrics beside them. The examples and the
title follow the IndoNLU task the model's config records (SmSA-style reviews when it records none). Predictions go
through :class:`hf_indosent.inference.predictor.Predictor`, the batched path of ``hf-indosent predict``, so the page,
the CLI and the Space give the same labels.

Gradio is an optional extra (``pip install -e ".[demo]"``) and is imported only inside the functions that need it.
Bad input (an empty text, a file over the limits, a compressed or binary file) ends as a message in the page, never as
a crash of the server; a row that cannot be classified (an empty line, text that is not valid Unicode) keeps its place
in the result with its error, as in ``hf-indosent predict``. Nothing here reaches the network except what is asked
for: Gradio's analytics are off unless ``GRADIO_ANALYTICS_ENABLED`` says otherwise, the server listens on 127.0.0.1
unless ``--host``/``--share`` are given, and only a Hub model id (not a local folder) makes the page load that model's
card from the Hub.
"""

from __future__ import annotations

import atexit
import itertools
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import yaml
from huggingface_hub import ModelCard

from hf_indosent.data.parsing import DataFormatError
from hf_indosent.data.tasks import DEFAULT_TASK, Task
from hf_indosent.inference.arguments import DEFAULT_HOST
from hf_indosent.inference.inputs import open_input
from hf_indosent.inference.outputs import ResultWriter
from hf_indosent.inference.predictor import Predictor
from hf_indosent.modeling.loading import BEST_DIR
from hf_indosent.sharing.arguments import DemoArguments
from hf_indosent.sharing.model_card import CARD_METRICS, TASK_CARDS, WIDGET_EXAMPLES, card_task, task_card

if TYPE_CHECKING:
    import gradio

logger = logging.getLogger(__name__)

INSTALL_HINT = 'pip install -e ".[demo]"'
DEFAULT_TITLE = "Indonesian sentiment (SmSA)"
# Short reviews written like SmSA texts (lower case, spaces around punctuation): the examples of a model whose config
# records no task, or SmSA.
EXAMPLES: tuple[str, ...] = (
    "makanan nya enak sekali .",
    "pelayanan nya lambat dan kasar .",
    *(example["text"] for example in WIDGET_EXAMPLES),
)
# Limits that keep one visitor from tying up a CPU for minutes; larger jobs belong to `hf-indosent predict --file`.
MAX_TEXT_CHARS = 5_000
MAX_FILE_ROWS = 10_000
MAX_FILE_BYTES = 5 * 1024 * 1024
LIMITS_TEXT = (
    f"At most {MAX_FILE_ROWS:,} rows and {MAX_FILE_BYTES // (1024 * 1024)} MB per file, {MAX_TEXT_CHARS:,} characters "
    "per text; for more, use `hf-indosent predict --file`."
)
CONCURRENCY_ID = "model"
"""Both tabs share one queue slot: a fast tokenizer is not safe to call from two threads at once."""
ASPECT_HEADERS = ["aspect", "label", "score"]
"""The text tab's table for an aspect model: one row per aspect, in the model's order."""


def _import_gradio() -> Any:
    """Gradio, with its analytics off (no phone-home) unless the user asked for them."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError:
        raise ImportError(f"gradio is not installed: {INSTALL_HINT}") from None
    return gradio


# --------------------------------------------------------------------------------------------------------------
# Headline metrics: metrics.json of a local run, or the model-index of a Hub model card


def headline_metrics(model_path: str) -> tuple[dict[str, dict[str, float]], str]:
    """``{split: {metric: value}}`` and where they come from (or why there are none); never raises.

    ``model_path`` is a resolved model (a loaded Predictor's ``model_path``). A local folder reads ``metrics.json``
    next to it, i.e. the run folder that holds ``best/`` (what training's ``finish()`` writes); a Hub id reads the
    model card's model-index, which fails softly when the Hub cannot be reached.
    """
    if Path(model_path).is_dir():
        path = Path(model_path).parent / "metrics.json"
        if not path.is_file():
            return {}, f"no metrics: {path} not found (it is written when training ends)"
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            return {}, f"no metrics: {path} cannot be read ({err})"
        found = {
            split: {
                key: content[split][key] for key in CARD_METRICS if isinstance(content[split].get(key), int | float)
            }
            for split in ("validation", "test")
            if isinstance(content.get(split), dict)
        }
        epoch = f", best epoch {content['best_epoch']}" if content.get("best_epoch") is not None else ""
        return {split: values for split, values in found.items() if values}, f"from {path.name}{epoch}"
    try:
        card = ModelCard.load(model_path)
    except (OSError, ValueError, yaml.YAMLError) as err:  # offline, no such repo or card, a card that does not parse
        logger.warning("model card of %s not loaded: %s", model_path, err)
        return {}, f"no metrics: the model card of {model_path} could not be loaded ({type(err).__name__})"
    splits: dict[str, dict[str, float]] = {}
    for result in card.data.eval_results or []:
        if isinstance(result.metric_value, int | float):
            splits.setdefault(result.dataset_split or "results", {})[result.metric_type] = result.metric_value
    if not splits:
        return {}, f"no metrics in the model card of {model_path}"
    return splits, f"from the model card of {model_path}"


def metrics_markdown(model: str | Path, model_path: str, label_names: list[str], aspects: tuple[str, ...] = ()) -> str:
    """The side panel: which model, its labels (and aspects), its headline metrics table and the page's limits."""
    splits, source = headline_metrics(model_path)
    name = str(model)
    if Path(model).is_dir():  # the folder's name, not a path of this machine
        folder = Path(model).resolve()
        name = f"{folder.parent.name}/{BEST_DIR}" if folder.name == BEST_DIR else folder.name
    labels = f"labels: {', '.join(label_names)}"
    if aspects:
        labels = f"aspects: {', '.join(aspects)} · {labels} (for each aspect)"
    sections = [f"### Model\n`{name}` · {labels}"]
    table = ""
    if splits:  # one row per metric, one column per split: narrow enough for a side panel
        keys = [key for key in CARD_METRICS if any(key in values for values in splits.values())]
        keys += sorted({key for values in splits.values() for key in values} - set(keys))
        rows = ["| metric | " + " | ".join(splits) + " |", "|---" * (len(splits) + 1) + "|"]
        for key in keys:
            cells = [f"{values[key]:.3f}" if key in values else "" for values in splits.values()]
            rows.append(f"| {CARD_METRICS.get(key, key)} | " + " | ".join(cells) + " |")
        table = "\n".join(rows) + "\n\n"
        if aspects:
            table += "Over every (text, aspect) pair, as IndoNLU scores aspects.\n\n"
    sections.append(f"### Headline metrics\n{table}_{source}_")
    sections.append(f"### Limits\n{LIMITS_TEXT}")
    return "\n\n".join(sections)


# --------------------------------------------------------------------------------------------------------------
# The app


def _check_upload(gr: Any, path: Path) -> None:
    """Refuse files over the byte limit and empty files before anything is read (compressed and binary files are
    refused by the CLI's own check when the file is opened)."""
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise gr.Error(
            f"{path.name} is {size / (1024 * 1024):.1f} MB; the demo takes at most "
            f"{MAX_FILE_BYTES // (1024 * 1024)} MB. Split it, or use `hf-indosent predict --file`.",
            print_exception=False,
        )
    if size == 0:
        raise gr.Error(f"{path.name} is empty: upload a file with one text per line.", print_exception=False)


class PageText(NamedTuple):
    title: str
    line: str
    """Under the title: what the model tells about a text."""
    examples: tuple[str, ...]
    examples_label: str


def page_title(task: Task | None, aspect_based: bool) -> str:
    """SmSA's title (a model's whose config records no task too) unless the model is another IndoNLU task's or an
    aspect model."""
    subject = task_card(task, aspect_based).subject
    if task is not None and task.name != DEFAULT_TASK:
        return f"Indonesian {subject} ({task.title})"
    return f"Indonesian {subject}" if aspect_based else DEFAULT_TITLE


def page_text(task: Task | None, label_names: list[str], aspects: tuple[str, ...]) -> PageText:
    """The page's words and examples: SmSA's (generic reviews) unless the model is another IndoNLU task's (``task``)
    or an aspect model."""
    if task is None or task.name == DEFAULT_TASK:
        what, style, examples = f"{task_card(None, bool(aspects)).subject} of Indonesian text", "SmSA", EXAMPLES
    else:
        what, style = task.description, task.title
        examples = tuple(example["text"] for example in TASK_CARDS[task.name].examples)
    labels = ", ".join(label_names)
    answers = f"a label ({labels}) for each aspect: {', '.join(aspects)}" if aspects else labels
    line = f"{what[0].upper()}{what[1:]}: {answers}."
    return PageText(page_title(task, bool(aspects)), line, examples, f"Examples ({style} style)")


def build_app(model: str | Path, *, title: str | None = None, device: str | None = None) -> gradio.Blocks:
    """The demo as a ``gradio.Blocks``: load the model once, then ``.launch()`` it locally or on a Space.

    ``model`` is a training run folder, its ``best/`` folder or a Hub id, as for ``hf-indosent predict``; ``title``
    defaults to one naming the IndoNLU task the model's config records.
    """
    gr = _import_gradio()
    predictor = Predictor(model, device=device)
    labels, aspects = predictor.label_names, predictor.aspects
    page = page_text(card_task(predictor.task, None, bool(aspects)), labels, aspects)
    title = title or page.title
    workdir = Path(tempfile.mkdtemp(prefix="hf-indosent-demo-"))
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)

    def classify(text: str | None) -> dict[str, float] | list[list[Any]]:
        if not text or not text.strip():
            raise gr.Error(
                "The text box is empty: type an Indonesian sentence or pick an example.", print_exception=False
            )
        if len(text) > MAX_TEXT_CHARS:
            raise gr.Error(
                f"The text has {len(text):,} characters; the demo takes at most {MAX_TEXT_CHARS:,}. Shorten it, or "
                "use the file tab or `hf-indosent predict`.",
                print_exception=False,
            )
        (result,) = predictor([text])
        if result["error"] is not None:
            raise gr.Error(f"Cannot classify this text: {result['error']}.", print_exception=False)
        if aspects:  # one row per aspect: its label and that label's probability
            return [
                [aspect, found["label"], found["scores"][found["label"]]] for aspect, found in result["aspects"].items()
            ]
        return result["scores"]

    def classify_file(file: str | None, text_column: str | None) -> tuple[str, str]:
        if not file:
            raise gr.Error("No file: upload a .txt (one text per line), .csv or .tsv file.", print_exception=False)
        path = Path(file)
        column = (text_column or "").strip()
        _check_upload(gr, path)
        try:  # the CLI's reading: lines, or the named column of a CSV/TSV; a file that is not text is refused
            rows = list(itertools.islice(open_input(str(path), column or None).rows(), MAX_FILE_ROWS + 1))
        except DataFormatError as err:
            where = f", line {err.line}" if err.line is not None else ""
            fix = err.fix.replace("Set --text_column", "Type one of those names in 'Text column'")
            raise gr.Error(f"{path.name}{where}: {err.problem}. {fix}.", print_exception=False) from None
        if len(rows) > MAX_FILE_ROWS:
            raise gr.Error(
                f"{path.name} has more than {MAX_FILE_ROWS:,} rows; the demo takes at most {MAX_FILE_ROWS:,}. Split "
                "it, or use `hf-indosent predict --file`.",
                print_exception=False,
            )
        output = Path(tempfile.mkdtemp(dir=workdir)) / f"{path.stem}-predictions.csv"
        errors = 0
        with open(output, "w", encoding="utf-8", newline="") as handle:
            writer = ResultWriter(handle, "csv", labels, aspects)
            for index, (row, result) in enumerate(zip(rows, predictor.stream(rows), strict=True)):
                writer.write(index, row, result)
                errors += result["error"] is not None
        summary = f"{len(rows):,} rows classified, in input order."
        if errors:
            summary = (
                f"{len(rows) - errors:,} of {len(rows):,} rows classified; {errors:,} have no label (see 'error')."
            )
            gr.Warning(f"{errors:,} of {len(rows):,} rows could not be classified: their 'error' column says why.")
        return str(output), summary

    with gr.Blocks(title=title, delete_cache=(3600, 3600)) as app:
        gr.Markdown(f"# {title}\n{page.line}")
        with gr.Row():
            with gr.Column(scale=3):
                with gr.Tab("Text"):
                    text = gr.Textbox(
                        label="Indonesian text",
                        lines=3,
                        max_length=MAX_TEXT_CHARS,
                        placeholder=page.examples[0],
                        elem_id="input-text",
                    )
                    button = gr.Button("Classify", variant="primary", elem_id="classify")
                    if aspects:
                        answer = gr.Dataframe(
                            headers=ASPECT_HEADERS,
                            datatype=["str", "str", "number"],
                            label="Label per aspect",
                            interactive=False,
                            elem_id="aspects",
                        )
                    else:
                        answer = gr.Label(label="Sentiment", num_top_classes=len(labels), elem_id="sentiment")
                    gr.Examples(list(page.examples), inputs=text, label=page.examples_label)
                with gr.Tab("File"):
                    gr.Markdown(
                        "A .txt file with one text per line, or a .csv/.tsv file with a header row: type the name of "
                        f"its text column. The result is a CSV in input order. {LIMITS_TEXT}"
                    )
                    upload = gr.File(label="Input file", file_types=[".txt", ".csv", ".tsv"], type="filepath")
                    column = gr.Textbox(label="Text column (CSV/TSV with a header; empty: one text per line)")
                    file_button = gr.Button("Classify file", variant="primary")
                    download = gr.File(label="Predictions (CSV)")
                    summary = gr.Markdown()
            with gr.Column(scale=2):
                gr.Markdown(metrics_markdown(model, predictor.model_path, labels, aspects))
        events = {"concurrency_id": CONCURRENCY_ID, "concurrency_limit": 1}
        gr.on([button.click, text.submit], classify, inputs=text, outputs=answer, api_name="classify", **events)
        file_button.click(
            classify_file, inputs=[upload, column], outputs=[download, summary], api_name="classify_file", **events
        )
    return app


def launch(
    app: gradio.Blocks, *, host: str = DEFAULT_HOST, port: int | None = None, share: bool = False, block: bool = True
) -> str:
    """Serve ``app`` (uploads over the byte limit are refused by the server itself); returns the local URL."""
    app.launch(
        server_name=host,
        server_port=port,
        share=share,
        max_file_size=MAX_FILE_BYTES,
        prevent_thread_lock=not block,
        quiet=not block,
    )
    return str(app.local_url)


# --------------------------------------------------------------------------------------------------------------
# Hugging Face Space


# --------------------------------------------------------------------------------------------------------------
# Command line


def cli_run(args: DemoArguments) -> int:
    """``hf-indosent demo`` after argument parsing: serve until Ctrl-C (errors become one line in hf_indosent.cli)."""
    _import_gradio()  # before the model loads: without gradio, say how to install it at once
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own requests to the local server, one per start
    launch(build_app(args.model, device=args.device), host=args.host, port=args.port, share=args.share)
    return 0
