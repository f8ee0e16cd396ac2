"""What a model answers (its aspects and labels) and which IndoNLU task it is scored or submitted on.

``predict --submission`` and ``evaluate`` both pick the task the same way (``--task``, else the task the model's
config records, else SmSA) and refuse, before predicting anything, a model whose heads are another task's: its
labels would be scored against the wrong gold labels, or its submission rejected by the portal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hf_indosent.data.tasks import DEFAULT_TASK, Task, get_task
from hf_indosent.inference.base import ChunkedPredictor
from hf_indosent.modeling.aspects import aspect_label_names, aspects_of, check_aspect_config, task_of
from hf_indosent.modeling.loading import label_names_of, load_config


def model_labels(model_path: str, revision: str | None = None) -> tuple[tuple[str, ...], list[str], str | None]:
    """A model's aspects (empty: one label per text), the labels each of its heads predicts, and the IndoNLU task its
    config records (``None``: none). An aspect model's ``id2label`` holds its flat ``aspect:label`` outputs, so its
    labels come from ``aspect_labels`` (see :mod:`hf_indosent.modeling.aspects`)."""
    config = load_config(model_path, revision)
    check_aspect_config(config)  # the torch backends check it on loading, an ONNX export folder only here
    aspects = aspects_of(config)
    labels = list(aspect_label_names(config)) if aspects else label_names_of(model_path, revision)
    return aspects, labels, task_of(config)


def predictor_task(requested: str | None, predictor: ChunkedPredictor) -> Task:
    """``--task``, else the task the model was fine-tuned on (its config's record; a TF-IDF baseline has none), else
    SmSA; refused unless the model's heads are that task's (see :func:`check_task`)."""
    task = get_task(requested or predictor.task or DEFAULT_TASK)
    check_task(predictor, task)
    return task


def check_task(predictor: ChunkedPredictor, task: Task) -> None:
    """Refuse a model whose aspects or labels are not ``task``'s, in one line (names compared, not their order)."""
    if sorted(predictor.aspects) == sorted(task.aspects) and sorted(predictor.label_names) == sorted(task.label_names):
        return
    raise ValueError(
        f"{task.title} needs {_heads(task.aspects, task.label_names)}, but the model predicts "
        f"{_heads(predictor.aspects, predictor.label_names)}: use a model fine-tuned on {task.title}, or pass the "
        "--task it was fine-tuned on"
    )


def answers(result: Mapping[str, Any], aspects: Sequence[str]) -> list[Mapping[str, Any]]:
    """A classified row's ``{"label", "scores"}`` answers: one per aspect (in ``aspects`` order), or the one answer of
    a single-label model (``aspects`` empty)."""
    return [result["aspects"][aspect] for aspect in aspects] if aspects else [result]


def _heads(aspects: Sequence[str], label_names: Sequence[str]) -> str:
    labels = f"one of {', '.join(label_names)}"
    return f"{labels} for each of the aspects {', '.join(aspects)}" if aspects else f"{labels} per text"
