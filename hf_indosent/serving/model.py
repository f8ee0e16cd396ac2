"""The model as the service calls it: the same :class:`~hf_indosent.inference.predictor.Predictor` as ``hf-indosent
predict``.

Inference is never re-implemented here: every backend, the length-sorted batching by ``max_batch_tokens``, the
truncation and the scores are the Predictor's, so the service answers what ``predict`` writes. What the service adds:

- token counts, from its own copy of the tokenizer (a fast tokenizer is not safe to call from two threads at once,
  and the inference thread calls the Predictor's), for the text limit (413) and the batcher's token budget;
- *views* of the Predictor for TEI's ``raw_scores`` (the logits) and ``truncation_direction: left``: a shallow copy
  whose ``pipe`` is the same pipeline with ``postprocess(function_to_apply="none")`` or a left-truncating tokenizer.
  That relies on the Predictor doing its work through ``pipe.tokenizer``/``pipe.forward``/``pipe.postprocess``, as
  its docstring says, so warm-up checks it (the pipeline's own softmax of the raw view's scores must give the plain
  scores); should it fail, those two options answer 422 and everything else works on. An aspect model's Predictor
  scores each aspect with its ``aspect_scores`` (a softmax per aspect, not the pipeline's): its raw view swaps that
  for :func:`~hf_indosent.modeling.aspects.per_aspect` (the logits), checked the same way;
- warm-up before the service reports ready, and what ``/info`` shows.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from hf_indosent.inference.arguments import CPU_BATCH_TOKENS
from hf_indosent.inference.base import ChunkedPredictor
from hf_indosent.inference.predictor import model_identity
from hf_indosent.modeling.aspects import ASPECT_LABELS_KEY, ASPECTS_KEY, aspect_scores, flat_label_names, per_aspect
from hf_indosent.modeling.folders import short_reason
from hf_indosent.serving.protocol import TRUNCATION_SIDES, RequestError

logger = logging.getLogger(__name__)

WARM_UP_TEXTS = ("makanan nya enak sekali .", "pelayanan nya lambat dan kasar , saya kecewa .")
BACKEND_DTYPES = {"torch-bf16": "bfloat16", "torch-int8": "int8", "onnx": "float32", "onnx-int8": "int8"}
SCORE_TOLERANCE = 1e-5


class PipelineView:
    """A text-classification pipeline with another tokenizer and/or score function; everything else is the same
    object (the model is not copied)."""

    def __init__(self, pipe: Any, tokenizer: Any, function_to_apply: str | None) -> None:
        self._pipe = pipe
        self.tokenizer = tokenizer
        self._function_to_apply = function_to_apply

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)

    def postprocess(self, model_outputs: Any, **kwargs: Any) -> Any:
        if self._function_to_apply is not None:
            kwargs["function_to_apply"] = self._function_to_apply
        return self._pipe.postprocess(model_outputs, **kwargs)


class ServedModel:
    """A loaded predictor, its token counter, its views (raw scores, left truncation) and its ``/info``."""

    def __init__(self, predictor: ChunkedPredictor, model: str, revision: str | None = None) -> None:
        self.predictor = predictor
        self.model = model
        self.revision = revision
        self.pipe = getattr(predictor, "pipe", None)  # None: a TF-IDF baseline, which has no tokenizer or logits
        self.tokenizer = copy.deepcopy(self.pipe.tokenizer) if self.pipe is not None else None
        side = self.tokenizer.truncation_side if self.tokenizer is not None else "right"
        self.plain = (False, side)
        """The view key of the Predictor itself: probabilities, its tokenizer's side (``predict``'s results)."""
        self.views: dict[tuple[bool, str], ChunkedPredictor] = {self.plain: predictor}
        self.views_refused = "this model (a TF-IDF baseline) gives probabilities of whole texts only"

    @property
    def label_names(self) -> list[str]:
        """The labels of each answer: of the text, or of each aspect for an aspect model."""
        return self.predictor.label_names

    @property
    def aspects(self) -> tuple[str, ...]:
        return self.predictor.aspects

    @property
    def max_length(self) -> int | None:
        return self.predictor.max_length

    @property
    def max_batch_tokens(self) -> int:
        return getattr(self.predictor, "max_batch_tokens", CPU_BATCH_TOKENS)

    @property
    def max_pass_texts(self) -> int | None:
        """The most texts of one forward pass (the Predictor's ``batch_size``; None: the predictor has none)."""
        return getattr(self.predictor, "batch_size", None)

    def token_lengths(self, texts: Sequence[str], truncate: bool) -> list[int]:
        """Each text's tokens as the model will see them; 413 for one over the model's limit unless ``truncate``."""
        if self.tokenizer is None:
            return [len(text.split()) for text in texts]  # TF-IDF reads whole texts; words stand in for its cost
        try:
            lengths = self.tokenizer(list(texts), return_length=True, return_attention_mask=False, verbose=False)
        except Exception as err:  # the tokenizer's own refusal of this request's text, whatever its type
            raise RequestError("Tokenizer", f"the tokenizer cannot read the input ({short_reason(err)})") from None
        limit = self.max_length
        for index, length in enumerate(lengths["length"]):
            if length > limit and not truncate:
                where = f"inputs[{index}]" if len(texts) > 1 else "inputs"
                raise RequestError(
                    "Validation",
                    f"{where} has {length} tokens, more than the model's limit of {limit}: shorten it, or send "
                    '"truncate": true to classify its first (or with "truncation_direction": "left", last) tokens',
                )
        return [min(length, limit) for length in lengths["length"]]

    def view(self, raw_scores: bool, truncation_side: str) -> ChunkedPredictor:
        """The predictor that answers with these options; 422 where this model or the check at warm-up refused them."""
        key = (raw_scores, truncation_side)
        if key in self.views:
            return self.views[key]
        if self.pipe is None and not raw_scores:
            return self.predictor  # TF-IDF reads whole texts: nothing is truncated on either side
        option = "raw_scores" if raw_scores else "truncation_direction left"
        raise RequestError("Tokenizer", f"{option} is not available: {self.views_refused}")

    def warm_up(self) -> None:
        """Run the model once per view (first calls allocate and pick kernels) and check the views' results."""
        texts = list(WARM_UP_TEXTS)
        plain = self.predictor(texts)
        if self.pipe is None:
            return
        tokenizers = {}
        for side in TRUNCATION_SIDES:
            tokenizers[side] = self.pipe.tokenizer
            if side != self.pipe.tokenizer.truncation_side:
                tokenizers[side] = copy.deepcopy(self.pipe.tokenizer)
                tokenizers[side].truncation_side = side
        candidates = {
            (raw, side): self._view(tokenizers[side], raw)
            for raw in (False, True)
            for side in TRUNCATION_SIDES
            if (raw, side) != self.plain
        }
        if not self._raw_view_agrees(plain, candidates[True, self.plain[1]](texts)):
            self.views_refused = "this Predictor does not score through its pipeline as expected (see the log)"
            logger.warning("raw_scores and truncation_direction left are off: %s", self.views_refused)
            return
        self.views.update(candidates)

    def _view(self, tokenizer: Any, raw_scores: bool) -> ChunkedPredictor:
        view = copy.copy(self.predictor)
        view.pipe = PipelineView(self.pipe, tokenizer, "none" if raw_scores else None)
        if raw_scores and self.aspects:
            view.aspect_scores = per_aspect  # the logits, (batch, A, L), where the Predictor softmaxes each aspect
        return view

    def _raw_view_agrees(self, plain: list[dict[str, Any]], raw: list[dict[str, Any]]) -> bool:
        """The plain score function applied to the raw view's logits must give the plain scores, head by head."""
        for plain_row, raw_row in zip(plain, raw, strict=True):
            plain_heads, raw_heads = head_scores(plain_row), head_scores(raw_row)
            if raw_heads == plain_heads:
                return False
            for plain_scores, raw_scores in zip(plain_heads, raw_heads, strict=True):
                logits = torch.tensor([[raw_scores[name] for name in self.label_names]])
                for label, score in self._probabilities(logits).items():
                    if not math.isclose(score, plain_scores[label], abs_tol=SCORE_TOLERANCE):
                        return False
        return True

    def _probabilities(self, logits: torch.Tensor) -> dict[str, float]:
        """One head's ``(1, L)`` logits scored as the plain view scores them: the pipeline's own function, or an
        aspect model's softmax per aspect."""
        if self.aspects:
            return dict(zip(self.label_names, aspect_scores(logits, 1)[0, 0].tolist(), strict=True))
        return {item["label"]: item["score"] for item in self.pipe.postprocess({"logits": logits}, top_k=None)}

    def model_sha(self) -> str | None:
        """The Hub revision, or for a local folder a digest of its files' fingerprints (changes with any file)."""
        path = str(getattr(self.predictor, "model_path", self.model))
        if not Path(path).is_dir():
            return self.revision
        identity = json.dumps(model_identity(path, self.revision), sort_keys=True, default=str)
        return hashlib.sha256(identity.encode()).hexdigest()

    def classifier_info(self) -> dict[str, Any]:
        """TEI's ``model_type.classifier``: the model's outputs (an aspect model's are ``aspect:label``, as in its
        config.json), and for an aspect model its ``aspects`` and the ``aspect_labels`` each of them answers with."""
        outputs = flat_label_names(self.aspects, self.label_names) if self.aspects else self.label_names
        classifier: dict[str, Any] = {
            "id2label": {str(index): name for index, name in enumerate(outputs)},
            "label2id": {name: index for index, name in enumerate(outputs)},
        }
        if self.aspects:
            classifier |= {ASPECTS_KEY: list(self.aspects), ASPECT_LABELS_KEY: list(self.label_names)}
        return classifier

    def info(self) -> dict[str, Any]:
        """The model's part of ``/info``, in TEI's field names."""
        backend = getattr(self.predictor, "backend", "tf-idf")
        dtype = BACKEND_DTYPES.get(backend)
        if dtype is None and self.pipe is not None:
            dtype = str(self.pipe.model.dtype).removeprefix("torch.")
        return {
            "model_id": self.model,
            "model_sha": self.model_sha(),
            "model_dtype": dtype or "float64",
            "model_type": {"classifier": self.classifier_info()},
            "backend": backend,
            "device": str(getattr(self.predictor, "device", "cpu")),
            "max_input_length": self.max_length,
            "max_batch_tokens": self.max_batch_tokens,
            "raw_scores": (True, self.plain[1]) in self.views,
        }


def head_scores(row: dict[str, Any]) -> list[dict[str, float]]:
    """The scores of each head in a Predictor row: the text's, or each aspect's in order."""
    if "aspects" in row:
        return [result["scores"] for result in row["aspects"].values()]
    return [row["scores"]]
