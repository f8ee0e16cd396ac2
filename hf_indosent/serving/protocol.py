"""Hugging Face text-embeddings-inference (TEI) ``/predict``: its request shapes, its responses and its errors.

A request is ``{"inputs": "text" | [["text"], ["text"], ...], "truncate": bool | null, "truncation_direction":
"left" | "right", "raw_scores": bool}``; unknown fields are ignored, as TEI does. As in TEI, a flat list of two
strings is one sentence *pair*: this service classifies single texts, so it refuses a pair (422) and names the batch
form. An answer is every label with its score, highest first; a batch is a list of those, in request order.

An aspect model (CASA, HoASA) answers a text with one object per aspect, in the model's aspect order: ``{"aspect",
"label", "score", "scores"}``, its best label and that label's score beside ``scores``, the aspect's own labels in
TEI's ranked form. Each object still has TEI's ``label`` and ``score``, so a TEI client reads the answer as a list of
labels (one per aspect) and a batch as a list of those; ``raw_scores`` gives each aspect's logits.

Errors are TEI's JSON ``{"error", "error_type"}`` with TEI's status for each type: ``Empty`` 400, ``Validation`` 413
(too many texts, a text or body too long), ``Tokenizer`` 422 (not text, not the shape above), ``Backend`` 424 (the
model failed), ``Overloaded`` 429, ``Unhealthy`` 503; and ``Unauthorized`` 401 for a missing or wrong API key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hf_indosent.inference.base import input_error

ERROR_STATUS = {
    "Empty": 400,
    "Unauthorized": 401,
    "NotFound": 404,
    "MethodNotAllowed": 405,
    "Validation": 413,
    "Tokenizer": 422,
    "Backend": 424,
    "Overloaded": 429,
    "Internal": 500,
    "NotImplemented": 501,
    "Unhealthy": 503,
}
"""TEI's error types and statuses, plus the HTTP ones every route can answer."""
TRUNCATION_SIDES = ("right", "left")
BATCH_FORM = '[["first text"], ["second text"]]'


class RequestError(Exception):
    """A request the service answers with an error: TEI's ``error_type`` decides the HTTP status."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.status = ERROR_STATUS[error_type]

    def body(self) -> dict[str, str]:
        return {"error": str(self), "error_type": self.error_type}


@dataclass(frozen=True)
class PredictRequest:
    """A checked ``/predict`` request: its texts in order, and whether the answer is one list or a batch of lists."""

    texts: list[str]
    batch: bool
    truncate: bool
    truncation_side: str
    raw_scores: bool


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RequestError("Tokenizer", f'the body is not JSON in UTF-8 ({err}): send {{"inputs": ...}}') from None


def _flag(payload: dict[str, Any], name: str, default: bool | None) -> bool | None:
    value = payload.get(name, default)
    if value is not None and not isinstance(value, bool):
        raise RequestError("Tokenizer", f"{name} must be true, false or null, not {value!r}")
    return value


def _inputs(inputs: Any) -> tuple[list[Any], bool]:
    """The texts of TEI's ``inputs`` and whether it is a batch; a pair or any other shape is refused by name."""
    if isinstance(inputs, str):
        return [inputs], False
    if not isinstance(inputs, list):
        raise RequestError("Tokenizer", f"inputs must be a text or a batch {BATCH_FORM}, not {type(inputs).__name__}")
    if not inputs:
        raise RequestError("Empty", "inputs is an empty batch: send at least one text")
    if all(not isinstance(item, list) for item in inputs):
        if len(inputs) == 1:
            return inputs, False  # TEI: ["text"] is one text
        kind = "a sentence pair" if len(inputs) == 2 else "neither a text, a pair nor a batch"
        raise RequestError(
            "Tokenizer",
            f"inputs is a flat list of {len(inputs)} items, which TEI reads as {kind}; this model classifies single "
            f"texts: send a batch as {BATCH_FORM}",
        )
    texts = []
    for index, item in enumerate(inputs):
        if not isinstance(item, list) or len(item) != 1:
            shape = "a sentence pair" if isinstance(item, list) and len(item) == 2 else repr(item)[:40]
            raise RequestError(
                "Tokenizer", f"inputs[{index}] is {shape}: each batch item is a list of one text, as in {BATCH_FORM}"
            )
        texts.append(item[0])
    return texts, True


def check_text(text: Any, where: str) -> str:
    """``text`` if the model can read it, by ``predict``'s own check of every row (:func:`input_error`: not text,
    empty, not valid Unicode...); refused as TEI does: 400 for an empty text, 422 for the others."""
    reason = input_error(text)
    if reason is not None:
        empty = isinstance(text, str) and not text.strip()
        raise RequestError("Empty" if empty else "Tokenizer", f"{where}: {reason}")
    return text


def parse_predict_request(body: bytes, *, max_client_batch_size: int, auto_truncate: bool) -> PredictRequest:
    """A ``/predict`` body as a :class:`PredictRequest`, or the :class:`RequestError` TEI answers it with."""
    payload = parse_json(body)
    if not isinstance(payload, dict) or "inputs" not in payload:
        raise RequestError("Tokenizer", 'the body must be a JSON object with "inputs": a text or a batch ' + BATCH_FORM)
    texts, batch = _inputs(payload["inputs"])
    if len(texts) > max_client_batch_size:
        raise RequestError(
            "Validation",
            f"batch size {len(texts)} > maximum allowed batch size {max_client_batch_size}: split the batch",
        )
    side = payload.get("truncation_direction", "right")
    if not isinstance(side, str) or side.lower() not in TRUNCATION_SIDES:
        raise RequestError("Tokenizer", f"truncation_direction must be 'left' or 'right', not {side!r}")
    truncate = _flag(payload, "truncate", None)
    return PredictRequest(
        texts=[check_text(text, f"inputs[{index}]" if batch else "inputs") for index, text in enumerate(texts)],
        batch=batch,
        truncate=auto_truncate if truncate is None else truncate,
        truncation_side=side.lower(),
        raw_scores=bool(_flag(payload, "raw_scores", False)),
    )


def predictions(scores: dict[str, float]) -> list[dict[str, Any]]:
    """One text's answer: every label with its score, highest first (ties keep the model's label order)."""
    ranked = sorted(scores.items(), key=lambda item: -item[1])
    return [{"label": label, "score": score} for label, score in ranked]


def text_answer(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One text's answer from its Predictor row: TEI's ranked labels, or for an aspect model's row (``aspects``) one
    object per aspect, in the model's aspect order (see the module docstring)."""
    if "aspects" not in row:
        return predictions(row["scores"])
    answers = []
    for aspect, result in row["aspects"].items():
        ranked = predictions(result["scores"])
        answers.append({"aspect": aspect, **ranked[0], "scores": ranked})
    return answers
