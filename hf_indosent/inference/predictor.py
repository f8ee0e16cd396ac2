"""Predict sentiment with a saved model: a Python API for notebooks and the ``hf-indosent predict`` command.

The model is loaded as ``transformers.pipeline("text-classification", truncation=True, top_k=None)`` and every text is
truncated at an explicit max length, so texts longer than the model accepts never crash. Speed comes from how the
pipeline is fed: input is read in chunks (memory stays bounded on huge files), each chunk is sorted by token length
and cut into batches of similar lengths (little padding), and the input order is restored before anything is returned.
On the CPU, a backend (:mod:`hf_indosent.inference.export`: int8 PyTorch, or ONNX Runtime on an exported folder) can
replace the model inside the pipeline; everything else here stays the same. An aspect model (CASA, HoASA: one head
per aspect, see :mod:`hf_indosent.modeling.aspects`) is answered with a softmax per aspect instead of the pipeline's.

Bad input never shifts rows. Empty or whitespace-only texts, non-strings, undecodable lines, texts that are not valid
Unicode (:func:`hf_indosent.inference.inputs.text_problem`) and any text the tokenizer still refuses get an output row
with no label and an ``error`` that says why; row i of the output always belongs to row i of the input.

Reading inputs and writing outputs lives in :mod:`hf_indosent.inference.inputs`; runs over several processes, or
resumable ones, in :mod:`hf_indosent.inference.at_scale`, both with this module's :class:`Predictor`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import datasets
import torch
from transformers import pipeline

from hf_indosent.core.files import folder_fingerprint
from hf_indosent.inference.arguments import (
    CPU_BATCH_TOKENS,
    GPU_BATCH_TOKENS,
    INT8_FALLBACK_MARGIN,
    InferenceArguments,
    check_backend,
    check_batching,
    check_fallback_margin,
)
from hf_indosent.inference.backends import auto_backend, pipeline_model, quantize_linear_layers
from hf_indosent.inference.base import ChunkedPredictor, error_result, input_error
from hf_indosent.inference.inputs import arrow_values
from hf_indosent.inference.model_task import model_labels
from hf_indosent.inference.outputs import is_score_column, result_columns, result_table
from hf_indosent.modeling.aspects import aspect_scores
from hf_indosent.modeling.devices import bf16_matmul_speedup
from hf_indosent.modeling.folders import backend_files
from hf_indosent.modeling.loading import baseline_folder, max_positions, resolve_model_source

logger = logging.getLogger(__name__)


# Tokenizers without a declared limit report a huge sentinel (int(1e30)) as model_max_length.
_NO_LIMIT = 1_000_000


def resolve_device(device: str | int | None) -> torch.device:
    """``None`` picks the GPU when one is visible, else the CPU; an explicit CUDA device must exist."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(f"cuda:{device}" if isinstance(device, int) else device)
    except RuntimeError:
        raise ValueError(f"device={device!r} is not a torch device: use 'cpu', 'cuda' or 'cuda:N'") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but no CUDA GPU is visible: use device='cpu' or leave it unset")
    return resolved


def backend_device(backend: str, device: str | int | None) -> torch.device:
    """``torch`` and ``torch-bf16`` run where ``device`` says; int8 and ONNX Runtime backends on the CPU only."""
    if backend in ("torch", "torch-bf16"):
        return resolve_device(device)
    if device is not None and resolve_device(device).type != "cpu":
        raise ValueError(
            f"--backend {backend} runs on the CPU only, but device={device!r}: pass --device cpu, or --backend torch "
            "to use the GPU"
        )
    return torch.device("cpu")


def resolve_backend(model: str | Path, backend: str, device: str | int | None) -> tuple[str, str]:
    """The model folder (or Hub id) to load and the backend that runs it; ``auto`` picks by the folder's files."""
    check_backend(backend)
    path = resolve_model_source(model, weight_files=backend_files(backend))
    return path, auto_backend(path, resolve_device(device).type) if backend == "auto" else backend


def load_predictor(args: InferenceArguments) -> ChunkedPredictor:
    """The predictor ``--model`` names: a TF-IDF baseline run (``hf-indosent baseline``) or a fine-tuned transformer."""
    if baseline_folder(args.model) is not None:
        from hf_indosent.inference.baseline import BaselinePredictor  # scikit-learn and skops, only for a baseline

        return BaselinePredictor(args.model, chunk_size=args.chunk_size)
    return Predictor.from_arguments(args)


class Predictor(ChunkedPredictor):
    """A loaded text-classification pipeline and the length-sorted, chunked batching that feeds it.

    The pipeline's own stages do the work (its tokenizer with ``truncation=True`` and an explicit ``max_length``,
    ``pipe.forward`` for device placement, ``pipe.postprocess`` for the scores), so results are the pipeline's; only
    the batching differs. Within a chunk, texts are sorted by token length and cut into batches of at most
    ``batch_size`` texts and ``max_batch_tokens`` padded tokens: short texts share large batches, long ones small
    ones, and hardly any padding is computed. ``backend`` only changes the model inside the pipeline (see
    :mod:`hf_indosent.inference.export`); ``auto`` runs an exported folder with ONNX Runtime and anything else with
    PyTorch. An aspect model's answers are per aspect (see :attr:`ChunkedPredictor.aspects`).

    Load once, call often (``predictor(texts)`` or ``predictor.stream(rows)``); :func:`predict` does both in one go.
    """

    aspect_scores = staticmethod(aspect_scores)
    """How an aspect model's logits become its answers (a softmax per aspect); a view of the predictor may swap it
    (the server's ``raw_scores`` answers the logits)."""

    def __init__(
        self,
        model: str | Path,
        *,
        batch_size: int = 256,
        max_batch_tokens: int | None = None,
        device: str | int | None = None,
        max_length: int | None = None,
        chunk_size: int = 2048,
        revision: str | None = None,
        backend: str = "auto",
        int8_fallback_margin: float = INT8_FALLBACK_MARGIN,
    ) -> None:
        check_batching(batch_size, max_batch_tokens, chunk_size)
        check_fallback_margin(int8_fallback_margin)
        self.model_path, self.backend = resolve_backend(model, backend, device)
        self.revision = revision
        self.aspects, self.label_names, self.task = model_labels(self.model_path, revision)
        self.batch_size = batch_size
        self.chunk_size = chunk_size
        self.int8_fallback_margin = int8_fallback_margin if self.backend == "onnx-int8" else 0.0
        resolved = backend_device(self.backend, device)
        self.pipe = pipeline(
            "text-classification",
            **pipeline_model(self.model_path, self.backend, self.int8_fallback_margin, revision),
            revision=revision,
            device=resolved,
            truncation=True,
            top_k=None,
        )
        if self.backend == "torch-int8":
            quantize_linear_layers(self.pipe.model)
        if self.backend == "torch-bf16" and resolved.type == "cpu":
            warn_if_bf16_is_slow()
        self.max_length = self._max_length(max_length)
        if max_batch_tokens is None:
            max_batch_tokens = CPU_BATCH_TOKENS if resolved.type == "cpu" else GPU_BATCH_TOKENS
        self.max_batch_tokens = max_batch_tokens

    @classmethod
    def from_arguments(cls, args: InferenceArguments) -> Predictor:
        """The predictor ``hf-indosent predict`` / ``evaluate`` build from their command-line options."""
        return cls(
            args.model,
            batch_size=args.batch_size,
            max_batch_tokens=args.max_batch_tokens,
            device=args.device,
            max_length=args.max_length,
            chunk_size=args.chunk_size,
            revision=args.revision,
            backend=args.backend,
            int8_fallback_margin=args.int8_fallback_margin,
        )

    def _max_length(self, requested: int | None) -> int:
        """The explicit truncation length: the smallest limit the tokenizer and the position embeddings declare."""
        limits = [max_positions(self.pipe.model), self.pipe.tokenizer.model_max_length]
        known = [limit for limit in limits if limit is not None and limit < _NO_LIMIT]
        model_limit = min(known) if known else None
        if requested is None:
            if model_limit is None:
                raise ValueError(f"model {self.model_path!r} declares no maximum input length: pass max_length")
            return model_limit
        if requested < 2 or (model_limit is not None and requested > model_limit):
            raise ValueError(
                f"max_length={requested} is out of range: use 2..{model_limit} (the model's limit), or leave it unset"
            )
        return requested

    @property
    def device(self) -> torch.device:
        return self.pipe.device

    def _precision(self) -> contextlib.AbstractContextManager:
        """``torch-bf16``: matmuls in bf16 (autocast keeps softmax and layer norms in fp32); otherwise as loaded."""
        if self.backend != "torch-bf16":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def _batches(self, lengths: Sequence[int]) -> Iterator[list[int]]:
        """Indices of ``lengths`` shortest first, cut so no batch exceeds the text or padded-token limits."""
        batch: list[int] = []
        for index in sorted(range(len(lengths)), key=lengths.__getitem__):
            # Sorted ascending, so the newest text is the longest: the padded size is count x its length.
            if batch and (len(batch) == self.batch_size or (len(batch) + 1) * lengths[index] > self.max_batch_tokens):
                yield batch
                batch = []
            batch.append(index)
        if batch:
            yield batch

    def _predict_chunk(self, chunk: Sequence[Any]) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = [{}] * len(chunk)
        usable: dict[int, str] = {}
        for position, row in enumerate(chunk):
            reason = input_error(row)
            if reason is None:
                usable[position] = row
            else:
                results[position] = error_result(reason)
        lengths: dict[int, int] = {}
        for position, length in self._token_lengths(usable).items():
            if isinstance(length, str):
                results[position] = error_result(length)
            else:
                lengths[position] = length
        positions = list(lengths)
        for batch in self._batches(list(lengths.values())):
            self.before_batch()
            batch_positions = [positions[index] for index in batch]
            batch_results = self._predict_batch([usable[position] for position in batch_positions])
            for position, result in zip(batch_positions, batch_results, strict=True):
                results[position] = result
        return results

    def _predict_batch(self, texts: list[str]) -> list[dict[str, Any]]:
        inputs = self.pipe.tokenizer(
            texts, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt"
        )
        with torch.inference_mode(), self._precision():
            logits = self.pipe.forward(inputs)["logits"].float()
        if self.aspects:
            return [self._aspect_result(row) for row in self.aspect_scores(logits, len(self.aspects)).tolist()]
        results = []
        for row in range(len(texts)):
            # top_k=None without sorting: one {"label", "score"} per label, in id order.
            scores = self.pipe.postprocess({"logits": logits[row : row + 1]}, top_k=None)
            best = max(scores, key=lambda item: item["score"])
            results.append(
                {"label": best["label"], "scores": {item["label"]: item["score"] for item in scores}, "error": None}
            )
        return results

    def _aspect_result(self, probabilities: list[list[float]]) -> dict[str, Any]:
        """One text's answer from its ``(aspects, labels)`` probabilities: each aspect's label and its own softmax
        (the pipeline's postprocessing would softmax every aspect's outputs together)."""
        aspects = {}
        for aspect, row in zip(self.aspects, probabilities, strict=True):
            scores = dict(zip(self.label_names, row, strict=True))
            aspects[aspect] = {"label": max(scores, key=scores.__getitem__), "scores": scores}
        return {"aspects": aspects, "error": None}

    def _token_lengths(self, texts: dict[int, str]) -> dict[int, int | str]:
        """Position -> token count of each text, or why the tokenizer refuses it. The texts go to the tokenizer
        together; only if that fails, one at a time, so a text it cannot take (whatever the reason) costs its own row,
        not the chunk, and the retry costs time only when something failed. Every text batched later was taken here."""
        if not texts:
            return {}
        options = {"truncation": True, "max_length": self.max_length, "return_length": True}
        tokenize = functools.partial(self.pipe.tokenizer, **options)
        try:
            return dict(zip(texts, tokenize(list(texts.values()))["length"], strict=True))
        except Exception:  # any failure: the texts behind it are found below
            pass
        lengths: dict[int, int | str] = {}
        for position, text in texts.items():
            try:
                (lengths[position],) = tokenize([text])["length"]
            except Exception as err:  # a tokenizer's errors have no common type
                reason = " ".join(str(err).split()) or "no message"
                lengths[position] = f"the tokenizer cannot take this text ({type(err).__name__}: {reason})"
        return lengths


def warn_if_bf16_is_slow() -> None:
    """``torch-bf16`` on a CPU whose bf16 is emulated (AVX2-only, e.g. AMD Zen 3: 0.008x fp32) is a 100x slowdown the
    user chose without knowing: say so once, with the faster backends, and go on as asked."""
    speedup = bf16_matmul_speedup()
    if speedup < 1:
        logger.warning(
            "--backend torch-bf16: bf16 matmuls run at %.3gx the speed of fp32 on this CPU (no native bf16), so this "
            "will be slower than --backend torch; use torch, or onnx / onnx-int8 on an exported folder",
            speedup,
        )


def predict(
    texts: str | Iterable[Any],
    model: str | Path | Predictor,
    *,
    batch_size: int = 256,
    max_batch_tokens: int | None = None,
    device: str | int | None = None,
    max_length: int | None = None,
    revision: str | None = None,
) -> list[dict[str, Any]]:
    """Classify ``texts`` with a saved model (folder, run folder or Hub id) or an already loaded :class:`Predictor`.

    Returns one ``{"label": name, "scores": {name: probability, ...}, "error": None}`` per input, in input order (an
    aspect model's: ``{"aspects": {aspect: {"label", "scores"}}, "error": None}``). Inputs that are empty,
    whitespace-only or not strings get ``label=None`` and an ``error`` instead of a crash, so results always line up
    with inputs. A single string is treated as a list of one text.
    """
    settings = {"max_batch_tokens": max_batch_tokens, "device": device, "max_length": max_length, "revision": revision}
    return _loaded(model, batch_size=batch_size, **settings)(texts)


def _loaded(model: str | Path | Predictor, **settings: Any) -> Predictor:
    return model if isinstance(model, Predictor) else Predictor(model, **settings)


def predict_dataset(
    model: str | Path | Predictor,
    dataset: datasets.Dataset,
    text_column: str = "text",
    *,
    prefix: str = "pred_",
    include_scores: bool = True,
    batch_size: int = 256,
    max_batch_tokens: int | None = None,
    device: str | int | None = None,
    max_length: int | None = None,
    revision: str | None = None,
) -> datasets.Dataset:
    """``dataset`` with the predictions of its ``text_column`` added: ``{prefix}label``, ``{prefix}score`` (the top
    one), ``{prefix}score_<label>`` per label (``include_scores``) and ``{prefix}error``, row for row; for an aspect
    model ``{prefix}<aspect>`` (its label) and ``{prefix}<aspect>_score`` (``include_scores``) per aspect instead of
    the label and scores.

    ``dataset.map`` hands the :class:`Predictor` ``chunk_size`` rows at a time (sorted by length inside, as in
    :func:`predict`), and a dataset on disk gets its result cached on disk too, under a fingerprint of the data, the
    model and these settings, so a second call is free.
    """
    settings = {"max_batch_tokens": max_batch_tokens, "device": device, "max_length": max_length, "revision": revision}
    predictor = _loaded(model, batch_size=batch_size, **settings)
    columns = result_columns(
        predictor.label_names, include_text=False, include_scores=include_scores, aspects=predictor.aspects
    )[1:]
    if text_column not in dataset.column_names:
        raise ValueError(f"the dataset has no column {text_column!r} (it has {dataset.column_names}): set text_column")
    clashes = [prefix + column for column in columns if prefix + column in dataset.column_names]
    if clashes:
        raise ValueError(f"the dataset already has the columns {clashes}: pass another prefix than {prefix!r}")
    features = dataset.features.copy()
    for column in columns:
        features[prefix + column] = datasets.Value("float64" if is_score_column(column) else "string")

    def label(arrow_texts: Any) -> dict[str, list[Any]]:
        texts = arrow_values(arrow_texts)  # read from Arrow here: a string that is not UTF-8 fails its row, not the map
        table = result_table(columns, 0, texts, predictor.stream(texts))
        return {prefix + column: values for column, values in table.items()}

    identity = [dataset._fingerprint, model_identity(predictor.model_path, predictor.revision)]
    identity += [str(predictor.device), predictor.backend, predictor.max_length, predictor.batch_size]
    identity += [predictor.max_batch_tokens, predictor.chunk_size, predictor.int8_fallback_margin]
    labelled = dataset.with_format("arrow").map(
        label,
        batched=True,
        batch_size=predictor.chunk_size,
        input_columns=text_column,
        features=features,
        new_fingerprint=hashlib.sha256(json.dumps([*identity, text_column, columns, prefix]).encode()).hexdigest(),
        desc="predict",
    )
    return formatted_like(labelled, dataset)


def formatted_like(result: datasets.Dataset, dataset: datasets.Dataset) -> datasets.Dataset:
    """``result`` (``dataset`` with columns added, mapped in Arrow format) in ``dataset``'s format, as ``map`` keeps
    it: the same type, and the added columns among the formatted ones when only some were."""
    form = dataset.format
    columns = None
    if form["columns"] != dataset.column_names:
        columns = [*form["columns"], *(name for name in result.column_names if name not in dataset.column_names)]
    return result.with_format(
        form["type"], columns=columns, output_all_columns=form["output_all_columns"], **form["format_kwargs"]
    )


def model_identity(model_path: str, revision: str | None) -> dict[str, Any]:
    """What a model's predictions depend on: each file of a local folder (fingerprinted), or the Hub id and revision."""
    if Path(model_path).is_dir():
        return {"path": str(Path(model_path).resolve()), "files": folder_fingerprint(model_path)}
    return {"hub_model": model_path, "revision": revision}
