"""Models: light model-folder checks, loading a classifier and its labels, devices."""
