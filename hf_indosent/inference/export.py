"""Fast CPU inference: ``hf-indosent export`` writes a model as ONNX, and the backends :class:`Predictor` can run.

The export is torch's own exporter (``torch.onnx.export``, dynamo, which needs onnxscript) and the runtime ONNX
Runtime; optimum is not used because optimum-onnx pins an older transformers than this project needs. An export
folder holds ``model.onnx`` (fp32, dynamic batch and sequence axes), ``model_int8.onnx`` (ONNX Runtime's dynamic
quantization: int8 weights per output channel, activations quantized on the fly), ``config.json`` (so the labels
load by name), the tokenizer files and ``onnx_export.json`` (source, versions, opset, files, parity measured at export).

A backend only replaces the model inside the text-classification pipeline: ``torch`` (the saved weights),
``torch-int8`` (its Linear layers quantized in place by ``torch.ao.quantization.quantize_dynamic``), ``onnx`` and
``onnx-int8`` (:class:`OnnxSequenceClassifier`, which answers the pipeline's ``forward`` with ONNX Runtime). The
Predictor's tokenization, length-sorted batching, postprocessing and row order are the same for all of them.

onnx, onnxscript and onnxruntime are the optional extra ``onnx``; they are imported only inside the functions that
need them, so the rest of the project works without them.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import json
import logging
import os
import shutil
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TextClassificationPipeline
from transformers.modeling_outputs import SequenceClassifierOutput

from hf_indosent.core.folder_lock import FolderLock, holds_files
from hf_indosent.core.shell import command
from hf_indosent.inference.arguments import DEFAULT_OPSET, ExportArguments
from hf_indosent.modeling.folders import (
    CONFIG_FILE,
    ONNX_BACKEND_FILES,
    ONNX_FILE,
    ONNX_INT8_FILE,
    TOKENIZER_FILES,
    WEIGHT_FILES,
    ModelSourceError,
    check_onnx,
    export_again,
    resolve_model_source,
    short_reason,
)
from hf_indosent.modeling.folders import EXPORT_MANIFEST as MANIFEST_FILE
from hf_indosent.modeling.folders import backend_files as backend_files  # re-exported: the predictor picks files by it
from hf_indosent.modeling.loading import label_names_of, load_classifier, load_config, load_tokenizer
from hf_indosent.training.checkpoints import replace_dir

logger = logging.getLogger(__name__)

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
"""The tokenizer outputs an export may take, in this order; a model gets those its tokenizer and forward both know."""
INT8_SETTINGS = {"weight_type": "QInt8", "per_channel": True, "reduce_range": False}
"""ONNX Runtime dynamic quantization, measured best on AVX2: per channel keeps labels closer to fp32 at equal speed."""
PARITY_TOLERANCE = 1e-3
"""Largest logit difference between model.onnx and PyTorch that export accepts (fp32 exports differ by ~1e-7)."""
PROTOBUF_LIMIT = 2**31
"""A single .onnx file cannot exceed 2 GiB; bigger models keep their weights in model.onnx.data beside it."""
# Traced and checked at export: padded batches of different sizes, so both axes stay dynamic.
TRACE_TEXTS = ["makanan nya enak", "pelayanan nya lambat dan tempat nya kotor sekali"]
CHECK_TEXTS = ["bagus", "saya kecewa , makanan nya dingin dan pelayanan nya kasar sekali", "biasa saja", "mantap"]


def onnx_module(name: str, purpose: str) -> Any:
    """Import one of the optional ONNX packages, or say in one line how to install them."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        raise ImportError(
            f'{purpose} needs the optional ONNX packages ({name} is missing): pip install -e ".[onnx]"'
        ) from None


# --------------------------------------------------------------------------------------------------------------
# Backends


class OnnxTextClassificationPipeline(TextClassificationPipeline):
    """The text-classification pipeline around an :class:`OnnxSequenceClassifier`, which is a classifier by interface
    but not in transformers' model mapping: skip the check that would log "not supported" for it."""

    def check_model_type(self, supported_models: Any) -> None:
        pass


class OnnxSequenceClassifier(PreTrainedModel):
    """An exported classifier behind the model interface the pipeline calls: ``forward`` runs an ONNX Runtime session
    on the CPU and returns the logits as a torch tensor, so the pipeline's postprocessing applies unchanged.

    With a ``fallback`` session (the fp32 export behind an int8 one), the texts of a batch whose top two probabilities
    are closer than ``fallback_margin`` are run again by it and take its logits: int8 changes labels almost only on
    such close calls, and they are few. ``rechecked`` and ``seen`` count those texts and all texts.
    """

    def __init__(
        self,
        config: transformers.PretrainedConfig,
        session: Any,
        fallback: Any = None,
        fallback_margin: float = 0.0,
    ) -> None:
        super().__init__(config)
        self.session = session
        self.fallback = fallback
        self.fallback_margin = fallback_margin
        self.input_names = [item.name for item in session.get_inputs()]
        self.rechecked = 0
        self.seen = 0

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def forward(self, input_ids: torch.Tensor, **inputs: torch.Tensor) -> SequenceClassifierOutput:
        inputs["input_ids"] = input_ids
        feed = {name: inputs[name].numpy() for name in self.input_names}
        (logits,) = self.session.run(["logits"], feed)
        logits = torch.from_numpy(logits)
        self.seen += len(logits)
        if self.fallback is not None and logits.shape[-1] > 1:
            top = logits.float().softmax(dim=-1).topk(2, dim=-1).values
            close = ((top[:, 0] - top[:, 1]) < self.fallback_margin).nonzero().squeeze(1).numpy()
            if len(close):
                (exact,) = self.fallback.run(["logits"], {name: value[close] for name, value in feed.items()})
                logits[close] = torch.from_numpy(exact)
                self.rechecked += len(close)
        return SequenceClassifierOutput(logits=logits)


def onnx_session(path: str | Path, purpose: str, spinning: bool = True) -> Any:
    """An ONNX Runtime CPU session using as many threads as torch does (``torch.set_num_threads``, OMP_NUM_THREADS).

    ``spinning=False`` lets its threads sleep as soon as a run ends: two sessions taking turns (int8 and its fp32
    fallback) otherwise spin-wait against each other for the same cores (measured 15% slower on 2 cores).
    """
    ort = onnx_module("onnxruntime", purpose)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def auto_backend(model_path: str, device_type: str) -> str:
    """``auto``: the int8 export, else the fp32 one, else torch; a GPU run keeps torch where the folder has weights."""
    folder = Path(model_path)
    if not folder.is_dir() or (device_type == "cuda" and any((folder / name).is_file() for name in WEIGHT_FILES)):
        return "torch"
    return next((name for name in ("onnx-int8", "onnx") if (folder / ONNX_BACKEND_FILES[name]).is_file()), "torch")


def export_session(path: Path, purpose: str, spinning: bool = True) -> Any:
    """:func:`onnx_session` on a file of an export folder, checked: a truncated or corrupt file is refused by its
    layout before ONNX Runtime reads it, and any file ONNX Runtime still cannot load, in the same one line."""
    check_onnx(path)
    onnx_module("onnxruntime", purpose)  # its own one line when missing, before the import below
    from onnxruntime.capi.onnxruntime_pybind11_state import (
        Fail,
        InvalidArgument,
        InvalidGraph,
        InvalidProtobuf,
        NoSuchFile,
        RuntimeException,
    )

    try:
        return onnx_session(path, purpose, spinning)
    except (Fail, InvalidArgument, InvalidGraph, InvalidProtobuf, NoSuchFile, RuntimeException) as err:
        raise ModelSourceError(
            f"{path}: ONNX Runtime cannot load it ({short_reason(err)}): {export_again(path.parent)}"
        ) from None


def pipeline_model(
    model_path: str, backend: str, int8_fallback_margin: float = 0.0, revision: str | None = None
) -> dict[str, Any]:
    """What ``transformers.pipeline`` gets for ``backend``: the loaded and checked model and its tokenizer, plus the
    pipeline class for the ONNX classifier. The torch backends load through
    :func:`~hf_indosent.modeling.loading.load_classifier`, so a folder whose weights do not match its config is refused, never
    run with fresh layers; the ONNX ones through :func:`export_session`.

    ``onnx-int8`` with ``int8_fallback_margin`` > 0 also loads the folder's fp32 ``model.onnx`` for its close calls
    (see :class:`OnnxSequenceClassifier`).
    """
    if backend not in ONNX_BACKEND_FILES:
        # dtype "auto", as pipeline() loads a model by name: the weights' own dtype.
        model = load_classifier(model_path, revision, dtype="auto")
        return {"model": model, "tokenizer": load_tokenizer(model_path, revision)}
    folder = Path(model_path)
    if not folder.is_dir():
        raise ValueError(
            f"--backend {backend} runs a local folder written by `hf-indosent export`, and {model_path!r} is a Hub id: "
            "export it first, or use --backend torch"
        )
    purpose = f"--backend {backend}"
    with_fallback = backend == "onnx-int8" and int8_fallback_margin > 0
    if with_fallback and not (folder / ONNX_FILE).is_file():
        raise ValueError(
            f"{model_path!r} has {ONNX_INT8_FILE} but no {ONNX_FILE} to recompute close calls in fp32: pass "
            f"--int8_fallback_margin 0 to run int8 alone, or export the model again"
        )
    session = export_session(folder / ONNX_BACKEND_FILES[backend], purpose, spinning=not with_fallback)
    fallback = export_session(folder / ONNX_FILE, purpose, spinning=False) if with_fallback else None
    classifier = OnnxSequenceClassifier(load_config(model_path), session, fallback, int8_fallback_margin)
    return {
        "model": classifier,
        "tokenizer": load_tokenizer(model_path),
        "pipeline_class": OnnxTextClassificationPipeline,
    }


def quantize_linear_layers(model: torch.nn.Module) -> None:
    """``torch-int8``: every nn.Linear becomes a dynamically quantized int8 one (CPU only), in place. Weights are
    quantized per output channel, as in model_int8.onnx: at the same speed, labels stay closer to fp32."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():
        # torch.ao.quantization and its qint8 tensors are deprecated in favour of torchao (another dependency); they
        # still work in this torch, and the parity tests say so.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel")
        quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True)


# --------------------------------------------------------------------------------------------------------------
# Export


def input_names(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[str]:
    accepted = inspect.signature(model.forward).parameters
    return [name for name in INPUT_NAMES if name in tokenizer.model_input_names and name in accepted]


def encode(tokenizer: PreTrainedTokenizerBase, texts: list[str], names: Sequence[str]) -> dict[str, torch.Tensor]:
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    return {name: batch[name] for name in names}


def max_logit_difference(path: Path, reference: torch.Tensor, inputs: dict[str, torch.Tensor]) -> float:
    """How far ONNX Runtime's logits for ``inputs`` are from PyTorch's."""
    session = onnx_session(path, "hf-indosent export")
    (logits,) = session.run(["logits"], {name: tensor.numpy() for name, tensor in inputs.items()})
    return float((torch.from_numpy(logits) - reference).abs().max())


@contextmanager
def _quiet_exporters() -> Iterator[None]:
    """torch.onnx and onnx_ir log every graph pass at INFO, and ONNX Runtime's quantizer suggests a pre-processing step
    that dynamic quantization does not need: keep them off the terminal (the outcome is checked and logged instead).
    torch's loggers have their own handler, so "torch.onnx" (which warns that torchvision's ops are skipped) is
    quietened by name."""
    loggers = [logging.getLogger(), logging.getLogger("torch.onnx")]
    levels = [each.level for each in loggers]
    for each in loggers:
        each.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for each, level in zip(loggers, levels, strict=True):
            each.setLevel(level)


def export(
    model: str | os.PathLike, output_dir: str | os.PathLike, *, int8: bool = True, opset: int = DEFAULT_OPSET
) -> dict[str, Any]:
    """Write ``model`` (a model or run folder) as an ONNX Runtime folder; returns what ``onnx_export.json`` records.

    The folder is built beside ``output_dir`` and renamed onto it only when complete and checked, so a failed or
    interrupted export never leaves a half-written model where ``predict`` would pick it up.
    """
    for name in ("onnx", "onnxscript", "onnxruntime"):
        onnx_module(name, "hf-indosent export")

    source = Path(resolve_model_source(model))
    if not source.is_dir():
        raise ValueError(
            f"--model {os.fspath(model)!r} is not a local folder: export a training run folder or its best/ (save a "
            "Hub model with save_pretrained first)"
        )
    label_names = label_names_of(str(source))
    target = Path(output_dir).expanduser()
    check_output_dir(target, source)

    with FolderLock(target, job="export"):  # one writer per folder: a second export is refused, naming this one
        return _write_export(source, target, label_names, int8=int8, opset=opset)


def _write_export(source: Path, target: Path, label_names: list[str], *, int8: bool, opset: int) -> dict[str, Any]:
    """Trace, check and quantize ``source`` into a staging folder, then swap it onto ``target`` (see :func:`export`)."""
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidGraph
    from onnxruntime.capi.onnxruntime_pybind11_state import NotImplemented as OrtNotImplemented
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Eager attention traces to plain MatMul/Softmax; sdpa adds NaN guards to every layer (measured slower in ORT).
    torch_model = load_classifier(source, attn_implementation="eager").eval()
    tokenizer = load_tokenizer(str(source))
    names = input_names(torch_model, tokenizer)
    check_inputs = encode(tokenizer, CHECK_TEXTS, names)
    with torch.inference_mode():
        reference = torch_model(**check_inputs).logits
    size = sum(tensor.numel() * tensor.element_size() for tensor in torch_model.state_dict().values())

    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)
    try:
        batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
        logger.info("exporting %s to ONNX (opset %d, inputs %s)", source, opset, ", ".join(names))
        with _quiet_exporters():
            torch.onnx.export(
                torch_model,
                kwargs=encode(tokenizer, TRACE_TEXTS, names),
                f=temp / ONNX_FILE,
                input_names=names,
                output_names=["logits"],
                opset_version=opset,
                dynamic_shapes={name: {0: batch, 1: sequence} for name in names},
                external_data=size >= PROTOBUF_LIMIT,
                verbose=False,
            )
        try:
            differences = {ONNX_FILE: max_logit_difference(temp / ONNX_FILE, reference, check_inputs)}
        except (Fail, InvalidGraph, OrtNotImplemented) as err:  # e.g. an opset newer than this ONNX Runtime knows
            raise ValueError(
                f"ONNX Runtime {importlib.metadata.version('onnxruntime')} cannot load the opset {opset} export "
                f"({err}): pass a lower --opset (default {DEFAULT_OPSET})"
            ) from None
        if differences[ONNX_FILE] > PARITY_TOLERANCE:
            raise ValueError(
                f"the ONNX export of {source} gives logits {differences[ONNX_FILE]:.2g} away from PyTorch's (more than "
                f"{PARITY_TOLERANCE:g}): this model does not export faithfully; use --backend torch or torch-int8"
            )
        if int8:
            logger.info("quantizing to int8 (%s)", ", ".join(f"{key}={value}" for key, value in INT8_SETTINGS.items()))
            with _quiet_exporters():
                quantize_dynamic(
                    temp / ONNX_FILE,
                    temp / ONNX_INT8_FILE,
                    weight_type=getattr(QuantType, INT8_SETTINGS["weight_type"]),
                    per_channel=INT8_SETTINGS["per_channel"],
                    reduce_range=INT8_SETTINGS["reduce_range"],
                )
            differences[ONNX_INT8_FILE] = max_logit_difference(temp / ONNX_INT8_FILE, reference, check_inputs)
        for name in (CONFIG_FILE, *TOKENIZER_FILES):
            if (source / name).is_file():
                shutil.copy2(source / name, temp / name)
        manifest = {
            "source": str(source.resolve()),
            "labels": label_names,
            "inputs": names,
            "outputs": ["logits"],
            "opset": opset,
            "int8": {"file": ONNX_INT8_FILE, **INT8_SETTINGS} if int8 else None,
            "max_abs_logit_difference_vs_torch": differences,
            "versions": {
                package: importlib.metadata.version(package)
                for package in ("torch", "transformers", "onnx", "onnxscript", "onnxruntime")
            },
            "files": sorted([path.name for path in temp.iterdir()] + [MANIFEST_FILE]),
        }
        (temp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        replace_dir(temp, target)  # a former export stays until the new one is in place
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return manifest


def check_output_dir(target: Path, source: Path) -> None:
    """Refuse to write over the source model or over a folder that holds anything but a former export."""
    if target.exists() and not target.is_dir():
        raise ValueError(f"--output_dir {os.fspath(target)!r} is a file: pass a folder (it is created)")
    if target.is_dir() and target.resolve() == source.resolve():
        raise ValueError(f"--output_dir {os.fspath(target)!r} is the model folder itself: write the export to its own")
    if holds_files(target) and not (target / MANIFEST_FILE).is_file():
        raise ValueError(
            f"--output_dir {os.fspath(target)!r} already holds files that are not an `hf-indosent export`: choose a "
            "new or empty folder"
        )


def cli_run(args: ExportArguments) -> int:
    """``hf-indosent export`` after argument parsing (errors are turned into one line by :mod:`hf_indosent.cli`)."""
    manifest = export(args.model, args.output_dir, int8=args.int8, opset=args.opset)
    target = Path(args.output_dir)
    written = ", ".join(
        f"{name} ({(target / name).stat().st_size / 2**20:.1f} MiB, logits within {difference:.1g} of PyTorch)"
        for name, difference in manifest["max_abs_logit_difference_vs_torch"].items()
    )
    print(
        f"wrote {target}: {written}; run it with: {command('hf-indosent', 'predict', '--model', target)}",
        file=sys.stderr,
    )
    return 0
