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
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from hf_indosent.core.files import replace_dir, write_json
from hf_indosent.core.folder_lock import FolderLock, holds_files
from hf_indosent.core.shell import command
from hf_indosent.inference.arguments import DEFAULT_OPSET, ExportArguments
from hf_indosent.inference.backends import onnx_module, onnx_session
from hf_indosent.modeling.folders import (
    CONFIG_FILE,
    ONNX_FILE,
    ONNX_INT8_FILE,
    TOKENIZER_FILES,
    resolve_model_source,
)
from hf_indosent.modeling.folders import EXPORT_MANIFEST as MANIFEST_FILE
from hf_indosent.modeling.loading import label_names_of, load_classifier, load_tokenizer

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


# --------------------------------------------------------------------------------------------------------------
# Backends


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
        write_json(temp / MANIFEST_FILE, manifest)
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
