"""The model card (README.md) pushed with a model: Hub metadata in the YAML front matter, results and recipe below.

Everything comes from the run folder: label names from ``config.json``, results from ``metrics.json`` (validation, and
test when it was labelled) and the training recipe from ``args.json``. The card is built in memory; local paths from
the recipe are never written into it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

TEMPLATE = Path(__file__).parent / "templates" / "model_card.md"
"""The card's text, a `huggingface_hub.ModelCard` (Jinja) template; the metadata comes from ``ModelCardData``."""
LICENSE = "apache-2.0"
SMSA_DATASET = "indonlp/indonlu"  # the Hub copy of IndoNLU; SmSA is its "smsa" config
SMSA_CONFIG = "smsa"
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


def _trained_on_smsa(recipe: Mapping[str, Any] | None) -> bool:
    data = (recipe or {}).get("data") or {}
    return not data.get("train_file")


def _eval_results(metrics: Mapping[str, Any] | None, on_smsa: bool) -> list[EvalResult]:
    results = []
    for split in ("validation", "test"):
        scores = (metrics or {}).get(split)
        if not scores:
            continue
        for key, name in CARD_METRICS.items():
            results.append(
                EvalResult(
                    task_type="text-classification",
                    task_name="Sentiment Analysis",
                    dataset_type=SMSA_DATASET if on_smsa else "custom",
                    dataset_name="SmSA (IndoNLU)" if on_smsa else "own data",
                    dataset_config=SMSA_CONFIG if on_smsa else None,
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


def _results_table(metrics: Mapping[str, Any] | None, repo_id: str) -> str:
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
            "\nThe SmSA test labels are masked: score the test split on the IndoNLU CodaLab leaderboard with "
            f"`hf-indosent predict --model {repo_id} --submission pred.txt`."
        )
    return "\n".join(lines) + "\n"


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
) -> str:
    """The README.md text: YAML front matter (language, license, datasets, metrics, model-index, widget) and body."""
    on_smsa = _trained_on_smsa(recipe)
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
        tags=["sentiment-analysis", "indonlu", "smsa", "hf-indosent"] if on_smsa else ["sentiment-analysis"],
        datasets=[SMSA_DATASET] if on_smsa else None,
        metrics=list(CARD_METRICS),
        base_model=base_model,
        model_name=model_name,
        eval_results=_eval_results(metrics, on_smsa) or None,
        widget=[dict(example) for example in WIDGET_EXAMPLES],
    )
    data_line = (
        "[SmSA](https://github.com/IndoNLP/indonlu) (IndoNLU document-level sentiment: Indonesian reviews and "
        "comments, lower-cased, punctuation split off by spaces)"
        if on_smsa
        else "the owner's own labelled data"
    )
    card = ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        model_name=model_name,
        label_names=list(label_names),
        data_line=data_line,
        results_table=_results_table(metrics, repo_id) + _seeds_line(seeds),
        repo_id=repo_id,
        example=WIDGET_EXAMPLES[0]["text"],
        recipe_table=_recipe_table(recipe),
    )
    return str(card)
