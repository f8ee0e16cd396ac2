"""The data stage: the SmSA dataset builder, data arguments, loading the splits, tokenization."""
