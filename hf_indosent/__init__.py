"""hf_indosent: Indonesian sentiment (IndoNLU SmSA) trained, shared and served the Hugging Face way."""

from typing import Any

from hf_indosent.data import LABEL_NAMES, DataFormatError, MissingLabelsError, load_smsa

__version__ = "0.1.0"

__all__ = ["LABEL_NAMES", "DataFormatError", "MissingLabelsError", "__version__", "load_smsa", "predict"]


def __getattr__(name: str) -> Any:
    """``predict`` is imported on first use: it pulls in torch and transformers, which plain data work does not need."""
    if name == "predict":
        from hf_indosent.prediction import predict

        return predict
    raise AttributeError(f"module 'hf_indosent' has no attribute {name!r}")
