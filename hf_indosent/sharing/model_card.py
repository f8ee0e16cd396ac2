"""The model card (README.md) pushed with a model: Hub metadata in the YAML front matter, results and recipe below.

Everything comes from the run folder: label names, aspects and the IndoNLU task from ``config.json``, results from
``metrics.json`` (validation, and test when it was labelled; per aspect for CASA and HoASA) and the training recipe
from ``args.json``. The card is built in memory; local paths from the recipe are never written into it.

An aspect model's card says how to read it: its stacked heads are a stock ``BertForSequenceClassification`` whose
outputs a plain ``pipeline`` would softmax all together (see :mod:`hf_indosent.modeling.aspects`), so the card shows
the per-aspect reading and turns the Hub's widget (that plain softmax) off.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from hf_indosent.data.tasks import DEFAULT_TASK, Task, get_task

TEMPLATE = Path(__file__).parent / "templates" / "model_card.md"
"""The card's text, a `huggingface_hub.ModelCard` (Jinja) template; the metadata comes from ``ModelCardData``."""
LICENSE = "apache-2.0"
INDONLU_DATASET = "indonlp/indonlu"  # the Hub copy of IndoNLU; each task is its config of the same name ("smsa"...)
INDONLU_URL = "https://github.com/IndoNLP/indonlu"
CARD_METRICS: dict[str, str] = {
    "accuracy": "Accuracy",
    "f1": "Macro F1",
    "precision": "Macro precision",
    "recall": "Macro recall",
}
# Written like SmSA texts (lower case, spaces around punctuation), one per label.
WIDGET_EXAMPLES: tuple[dict[str, str], ...] = (
    {"text": "pelayanan nya ramah dan makanan nya enak sekali , pasti kembali lagi .", "example_title": "positif"},
    {"text": "rapat koordinasi partai akan digelar besok pagi di kantor dprd .", "example_title": "netral"},
    {"text": "kecewa banget , makanan nya basi dan harga nya mahal .", "example_title": "negatif"},
)


@dataclass(frozen=True)
class TaskCard:
    """How the card and the demo present a model of one IndoNLU task."""

    subject: str
    """What it classifies, in "Indonesian ... classifier" and the demo's title."""
    task_name: str
    """The model-index task name."""
    tag: str
    examples: tuple[dict[str, str], ...]
    """Texts written like the task's data, with a title each: the widget's and the demo's examples."""
    style: str = ""
    """How the training texts are written, when the card should tell users to write theirs alike."""


ASPECT_CARD = TaskCard(
    "aspect-based sentiment", "Aspect-based Sentiment Analysis", "aspect-based-sentiment-analysis", WIDGET_EXAMPLES
)
"""An aspect model whose task is not recorded (generic examples)."""
TASK_CARDS: dict[str, TaskCard] = {
    "smsa": TaskCard(
        "sentiment",
        "Sentiment Analysis",
        "sentiment-analysis",
        WIDGET_EXAMPLES,
        style="lower case, spaces around punctuation",
    ),
    "emot": TaskCard(
        "emotion",
        "Emotion Classification",
        "emotion-classification",
        (  # tweets, one per emotion
            {"text": "Sedih banget, kucing kesayanganku mati tadi pagi. Rumah jadi sepi", "example_title": "sadness"},
            {
                "text": "[USERNAME] Udah 3x komplain paket belum nyampe juga. Pelayanan macam apa ini?!",
                "example_title": "anger",
            },
            {"text": "Makasih ya sayang udah selalu ada buat aku, aku sayang kamu", "example_title": "love"},
            {"text": "Takut banget dengar suara petir dari tadi malam, listrik juga mati", "example_title": "fear"},
            {
                "text": "Alhamdulillah akhirnya lulus sidang skripsi hari ini! Senang sekali rasanya",
                "example_title": "happy",
            },
        ),
    ),
    "casa": dataclasses.replace(
        ASPECT_CARD,
        examples=(  # car reviews
            {
                "text": "mobil nya irit bensin dan mesin nya halus , tapi harga nya terlalu mahal .",
                "example_title": "fuel, machine, price",
            },
            {
                "text": "pelayanan bengkel resmi nya lambat dan suku cadang nya susah dicari .",
                "example_title": "service, part",
            },
            {"text": "tarikan mesin nya responsif , cocok untuk perjalanan jauh .", "example_title": "machine"},
        ),
    ),
    "hoasa": dataclasses.replace(
        ASPECT_CARD,
        examples=(  # hotel reviews
            {
                "text": "kamar nya bersih dan wifi kencang , tapi ac nya tidak dingin .",
                "example_title": "kebersihan, wifi, ac",
            },
            {
                "text": "air panas tidak keluar dan handuk nya bau , tapi resepsionis nya ramah .",
                "example_title": "air_panas, bau, service",
            },
            {"text": "sarapan nya enak tapi tv di kamar tidak bisa menyala .", "example_title": "sunrise_meal, tv"},
        ),
    ),
}
"""Task name -> how its models are presented."""
RECIPE_KEYS: dict[str, tuple[str, ...]] = {
    "data": ("max_seq_len",),
    "training": (
        "learning_rate",
        "weight_decay",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "num_train_epochs",
        "lr_step_size",
        "lr_gamma",
        "max_grad_norm",
        "label_smoothing",
        "focal_gamma",
        "class_weights",
        "early_stopping_patience",
        "metric_for_best_model",
        "mixed_precision",
        "seed",
    ),
}


def hub_model_id(name: str | None) -> str | None:
    """``name`` when it reads as a Hub id (``owner/name``); ``None`` for local paths, which must stay private."""
    if not name or name.startswith((".", "~", "/")) or "\\" in name or PurePath(name).is_absolute():
        return None
    if Path(name).exists():  # a relative folder such as models/mybert looks like owner/name
        return None
    return name if name.count("/") == 1 else None


def card_task(task: str | None, recipe: Mapping[str, Any] | None, aspect_based: bool) -> Task | None:
    """The IndoNLU task a model learnt: the one its config records, else its recipe's (``args.json``; SmSA for runs
    from before ``--task``, or with no recipe); ``None`` for the owner's own files, or a task of the other kind."""
    data = (recipe or {}).get("data") or {}
    if task is None and not data.get("train_file"):
        task = data.get("task") or DEFAULT_TASK
    found = get_task(task) if task else None
    return found if found is not None and found.is_aspect_based == aspect_based else None


def task_card(task: Task | None, aspect_based: bool) -> TaskCard:
    """How to present a model of ``task`` (``None``: not recorded, or the owner's own files)."""
    if task is not None:
        return TASK_CARDS[task.name]
    return ASPECT_CARD if aspect_based else TASK_CARDS[DEFAULT_TASK]


def _eval_results(metrics: Mapping[str, Any] | None, task: Task | None, presented: TaskCard) -> list[EvalResult]:
    results = []
    for split in ("validation", "test"):
        scores = (metrics or {}).get(split)
        if not scores:
            continue
        for key, name in CARD_METRICS.items():
            results.append(
                EvalResult(
                    task_type="text-classification",
                    task_name=presented.task_name,
                    dataset_type=INDONLU_DATASET if task else "custom",
                    dataset_name=f"{task.title} (IndoNLU)" if task else "own data",
                    dataset_config=task.name if task else None,
                    dataset_split=split,
                    metric_type=key,
                    metric_value=scores[key],
                    metric_name=name,
                    metric_args=None if key == "accuracy" else {"average": "macro"},
                )
            )
    return results


def _seeds_line(seeds: Mapping[str, Any] | None) -> str:
    """The spread over seeds (``seeds.json`` of ``scripts/seeds.py`` beside the run folder), so one lucky seed is
    never all a reader sees."""
    f1 = ((seeds or {}).get("summary") or {}).get("validation", {}).get("f1")
    if not f1:
        return ""
    spread = f" ± {f1['std']:.4f} (sample std)" if f1.get("std") is not None else ""
    return f"\nThe same recipe over {f1['n']} seeds: validation macro F1 {f1['mean']:.4f}{spread}.\n"


def _results_table(metrics: Mapping[str, Any] | None, repo_id: str, task: Task | None, aspects: Sequence[str]) -> str:
    rows = []
    for split in ("validation", "test"):
        scores = (metrics or {}).get(split)
        if scores:
            cells = [f"{scores[key]:.4f}" for key in CARD_METRICS] + [str(scores.get("num_examples", ""))]
            rows.append(f"| {split} | " + " | ".join(cells) + " |")
    if not rows:
        return "No `metrics.json` was found next to the model, so no results are reported here.\n"
    header = (
        "| split | " + " | ".join(CARD_METRICS.values()) + " | examples |\n|---|" + "---|" * (len(CARD_METRICS) + 1)
    )
    lines = [header, *rows, ""]
    if aspects:
        lines += [_aspect_results(metrics, aspects), ""]
    if "best_epoch" in metrics:
        lines.append(
            f"Best epoch {metrics['best_epoch']} of {metrics.get('epochs_completed', '?')} by validation "
            f"{metrics.get('metric_for_best_model', 'f1')}"
            + (" (training stopped early)." if metrics.get("stopped_early") else ".")
        )
    calibration = metrics.get("calibration")
    if calibration:
        before, after = calibration["ece_before"], calibration["ece_after"]
        lines.append(
            f"\nScores are calibrated: temperature scaling (T = {calibration['temperature']:.3f}, fitted on "
            f"validation) is part of the classifier layer; expected calibration error on validation {before:.4f} "
            f"before, {after:.4f} after ({calibration['bins']} bins)."
        )
    if not metrics.get("test"):
        lines.append(
            f"\nThe {(task.title if task else 'SmSA')} test labels are masked: score the test split on the IndoNLU "
            f"CodaLab leaderboard with `hf-indosent predict --model {repo_id} --submission pred.txt`."
        )
    return "\n".join(lines) + "\n"


def _aspect_results(metrics: Mapping[str, Any], aspects: Sequence[str]) -> str:
    """What the flattened metrics above are, and the per-aspect table (``validation_per_aspect``), which says which
    aspect is weak where the flattened F1 cannot."""
    text = (
        f"As in IndoNLU, every (text, aspect) pair is one prediction: the metrics above are macro averages over the "
        f'{len(aspects)} aspects\' pairs together (the flattened macro F1), and "examples" counts texts.\n'
    )
    per_aspect = metrics.get("validation_per_aspect") or {}
    rows = [
        f"| {aspect} | " + " | ".join(f"{per_aspect[aspect][key]:.4f}" for key in CARD_METRICS) + " |"
        for aspect in aspects
        if aspect in per_aspect
    ]
    if not rows:
        return text + "\n`metrics.json` has no per-aspect results (`validation_per_aspect`)."
    header = "| aspect | " + " | ".join(CARD_METRICS.values()) + " |\n|---|" + "---|" * len(CARD_METRICS)
    return (
        text
        + "\nPer aspect, on validation (each aspect's own macro metrics over its labels):\n\n"
        + "\n".join([header, *rows])
    )


def _recipe_table(recipe: Mapping[str, Any] | None) -> str:
    if not recipe:
        return "No `args.json` was found next to the model, so the training recipe is not recorded here.\n"
    model = (recipe.get("model") or {}).get("model_name_or_path") or ""
    base = hub_model_id(model)
    if base:
        described = f"[`{base}`](https://huggingface.co/{base})"
    elif "/" in model or "\\" in model or model.startswith((".", "~")):
        described = "a local model folder"  # its path means nothing to readers and may be private
    else:
        described = f"`{model}`"  # a bare name, e.g. a packaged model
    adapted = recipe.get("adapted_from")
    if adapted:
        source = hub_model_id(adapted.get("source_model"))
        name = f"[`{source}`](https://huggingface.co/{source})" if source else f"`{adapted.get('source_model')}`"
        before, after = adapted.get("validation_mlm_loss") or (None, None)
        loss = f"; held-out masked-LM loss {before:.3f} -> {after:.3f}" if before is not None else ""
        words = adapted.get("added_words")
        vocabulary = f", with {words} of their frequent words added to the vocabulary as whole tokens" if words else ""
        described = (
            f"{name}, adapted to the training texts{vocabulary} by masked-LM training first (`hf-indosent adapt`, "
            f"{adapted.get('epochs')} epochs{loss})"
        )
    rows = [f"| base model | {described} |"]
    for section, keys in RECIPE_KEYS.items():
        values = recipe.get(section) or {}
        rows += [f"| {key} | {values[key]} |" for key in keys if values.get(key) is not None]
    return "| setting | value |\n|---|---|\n" + "\n".join(rows) + "\n"


def build_model_card(
    repo_id: str,
    label_names: Sequence[str],
    metrics: Mapping[str, Any] | None = None,
    recipe: Mapping[str, Any] | None = None,
    seeds: Mapping[str, Any] | None = None,
    *,
    aspects: Sequence[str] = (),
    task: str | None = None,
) -> str:
    """The README.md text: YAML front matter (language, license, datasets, metrics, model-index, widget) and body.

    ``label_names`` are each aspect's labels for an aspect model (``aspects`` non-empty; see
    :func:`~hf_indosent.modeling.aspects.aspect_label_names`); ``task`` is the IndoNLU task its config records."""
    found = card_task(task, recipe, bool(aspects))
    presented = task_card(found, bool(aspects))
    adapted = (recipe or {}).get("adapted_from") or {}
    base_model = hub_model_id(
        adapted.get("source_model") or ((recipe or {}).get("model") or {}).get("model_name_or_path")
    )
    model_name = repo_id.split("/")[-1]
    card_data = ModelCardData(
        language="id",
        license=LICENSE,
        library_name="transformers",
        pipeline_tag="text-classification",
        tags=[presented.tag, "indonlu", found.name, "hf-indosent"] if found else [presented.tag],
        datasets=[INDONLU_DATASET] if found else None,
        metrics=list(CARD_METRICS),
        base_model=base_model,
        model_name=model_name,
        eval_results=_eval_results(metrics, found, presented) or None,
        # the Hub's widget softmaxes every output together: meaningless for stacked aspect heads
        widget=None if aspects else [dict(example) for example in presented.examples],
        inference=False if aspects else None,
    )
    if found is None:
        data_line = (
            "the owner's own labelled data" if not aspects else "aspect-labelled data (its task is not recorded)"
        )
    elif found.name == DEFAULT_TASK:
        data_line = (
            f"[SmSA]({INDONLU_URL}) (IndoNLU document-level sentiment: Indonesian reviews and comments, lower-cased, "
            "punctuation split off by spaces)"
        )
    else:
        data_line = f"[{found.title}]({INDONLU_URL}) (IndoNLU: {found.description})"
    card = ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        model_name=model_name,
        subject=presented.subject,
        label_names=list(label_names),
        aspects=list(aspects),
        outputs=len(aspects) * len(label_names),
        data_line=data_line,
        results_table=_results_table(metrics, repo_id, found, aspects) + _seeds_line(seeds),
        repo_id=repo_id,
        example=presented.examples[0]["text"],
        input_style=f" ({presented.style})" if presented.style else "",
        recipe_table=_recipe_table(recipe),
    )
    return str(card)
