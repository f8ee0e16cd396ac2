"""Inference: the predictor, runtime backends, reading texts and writing results, predict, evaluate, export,
baseline."""
