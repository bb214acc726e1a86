"""Tracking: MLflow (driver only) and the run's results folder."""
