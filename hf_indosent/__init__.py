"""hf_indosent: Indonesian sentiment (IndoNLU SmSA) trained, shared and served the Hugging Face way."""

from hf_indosent.data import LABEL_NAMES, DataFormatError, MissingLabelsError, load_smsa

__version__ = "0.1.0"

__all__ = ["LABEL_NAMES", "DataFormatError", "MissingLabelsError", "__version__", "load_smsa"]
