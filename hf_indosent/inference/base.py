"""What every predictor offers (a fine-tuned model's, a baseline's): labels for texts in chunks, one bad row answered
as an error row."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from hf_indosent.inference.inputs import BadInput, text_problem


class ChunkedPredictor:
    """What every predictor shares: one result per input row, in input order, ``chunk_size`` rows at a time.

    Subclasses set ``label_names``, ``max_length`` and ``chunk_size`` and implement ``_predict_chunk``; the
    predict/evaluate commands, the demo and :func:`predict_dataset` only use this interface.
    """

    label_names: list[str]
    max_length: int | None
    chunk_size: int
    task: str | None = None
    """The IndoNLU task the model was fine-tuned on, when its folder records one (``None``: not recorded)."""
    aspects: tuple[str, ...] = ()
    """An aspect model's aspects (CASA, HoASA), one head each over ``label_names``; empty: one label per text.

    A result of an aspect predictor is ``{"aspects": {aspect: {"label", "scores": {name: probability}}}, "error":
    None}`` (aspects in this order); a row it cannot classify is :func:`error_result`'s, as for any predictor."""

    @staticmethod
    def before_batch() -> None:
        """Called before each chunk and each model batch: a place to stop between them. ``hf-indosent predict`` sets
        it to flush its output and stop once the reader of a pipe has gone (:func:`stop_when_reader_gone`)."""

    def __call__(self, texts: str | Iterable[Any]) -> list[dict[str, Any]]:
        """One result per input: ``{"label", "scores": {name: probability}, "error"}`` (see module docstring)."""
        return list(self.stream([texts] if isinstance(texts, str) else texts))

    def stream(self, rows: Iterable[Any]) -> Iterator[dict[str, Any]]:
        """Lazily yield one result per input row, in input order, holding at most ``chunk_size`` rows at a time."""
        iterator = iter(rows)
        while True:
            self.before_batch()  # before the next chunk is read: the rows so far are out, and wanted
            chunk = list(itertools.islice(iterator, self.chunk_size))
            if not chunk:
                return
            yield from self._predict_chunk(chunk)

    def _predict_chunk(self, chunk: Sequence[Any]) -> list[dict[str, Any]]:
        raise NotImplementedError


def input_error(row: Any) -> str | None:
    """Why ``row`` cannot be classified, or ``None`` when it is a usable text: the one check of every row, whatever
    it came from (arguments, stdin, a file, a dataset, the demo) and whatever predicts it."""
    if isinstance(row, BadInput):
        return row.reason
    if not isinstance(row, str):
        return f"not a text: got {type(row).__name__}"
    if not row.strip():
        return "empty text"
    return text_problem(row)


def error_result(reason: str) -> dict[str, Any]:
    """The result of a row that cannot be classified: no label, no scores, and why."""
    return {"label": None, "scores": None, "error": reason}
