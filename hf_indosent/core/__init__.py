"""Shared mechanisms every stage uses: argument parsing and recipes, file safety, the folder lock, signals, quoting."""
