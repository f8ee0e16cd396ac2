"""Experiments over training runs: ``hf-indosent sweep``, a resumable Optuna hyperparameter search over a recipe.

Above :mod:`hf_indosent.training` (each trial is an ordinary training run) and below the command line.
"""
