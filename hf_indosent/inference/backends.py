"""Runtime backends: ONNX Runtime sessions (fp32, int8) behind the transformers pipeline, and PyTorch dynamic int8."""

from __future__ import annotations

import importlib
import importlib.metadata
import warnings
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import PreTrainedModel, TextClassificationPipeline
from transformers.modeling_outputs import SequenceClassifierOutput

from hf_indosent.modeling.aspects import aspect_scores, aspects_of
from hf_indosent.modeling.folders import (
    ONNX_BACKEND_FILES,
    ONNX_FILE,
    ONNX_INT8_FILE,
    WEIGHT_FILES,
    ModelSourceError,
    check_onnx,
    export_again,
    short_reason,
)
from hf_indosent.modeling.loading import load_classifier, load_config, load_tokenizer


def onnx_module(name: str, purpose: str) -> Any:
    """Import one of the optional ONNX packages, or say in one line how to install them."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        raise ImportError(
            f'{purpose} needs the optional ONNX packages ({name} is missing): pip install -e ".[onnx]"'
        ) from None


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
    such close calls, and they are few. For an aspect model the probabilities are each aspect's own softmax, and a
    text is a close call when any of its aspects is. ``rechecked`` and ``seen`` count those texts and all texts.
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
        self.num_aspects = len(aspects_of(config)) or 1  # a single-label model: one head
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
        if self.fallback is not None and logits.shape[-1] > self.num_aspects:  # more than one label per head
            top = aspect_scores(logits, self.num_aspects).topk(2, dim=-1).values  # (batch, heads, 2)
            margins = (top[..., 0] - top[..., 1]).amin(dim=-1)
            close = (margins < self.fallback_margin).nonzero().squeeze(1).numpy()
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


def pipeline_model(
    model_path: str, backend: str, int8_fallback_margin: float = 0.0, revision: str | None = None
) -> dict[str, Any]:
    """What ``transformers.pipeline`` gets for ``backend``: the loaded and checked model and its tokenizer, plus the
    pipeline class for the ONNX classifier. The torch backends load through
    :func:`~hf_indosent.modeling.loading.load_classifier`, so a folder whose weights do not match its config is
    refused, never run with fresh layers; the ONNX ones through :func:`export_session`.

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
