"""Scores: macro F1 and friends, through a local `evaluate` module."""
