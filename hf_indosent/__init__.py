"""hf_indosent: Indonesian sentiment (IndoNLU SmSA) trained, shared and served the Hugging Face way."""

import importlib
from typing import Any

__version__ = "0.1.0"

# Public names, imported on first use: `datasets`, torch and transformers take seconds to import, and the command
# line parses its arguments (and answers --help) before it needs any of them.
_LAZY = {
    "LABEL_NAMES": "hf_indosent.data.smsa",
    "DataFormatError": "hf_indosent.data.smsa",
    "MissingLabelsError": "hf_indosent.data.smsa",
    "load_smsa": "hf_indosent.data.smsa",
    "predict": "hf_indosent.inference.predictor",
    "predict_dataset": "hf_indosent.inference.predictor",
}

__all__ = ["LABEL_NAMES", "DataFormatError", "MissingLabelsError", "__version__", "load_smsa", "predict"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hf_indosent' has no attribute {name!r}")
