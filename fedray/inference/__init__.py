"""Use what a study trained: segment new CT, log the model to MLflow, export a MONAI bundle."""
