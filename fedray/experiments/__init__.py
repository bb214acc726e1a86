"""Experiments: sweeps over methods, seeds and config keys."""
