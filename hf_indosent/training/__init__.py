"""Training: arguments, setup, the loop and its step, packing, checkpoints, run folders, calibration, adaptation."""
