"""Read studies back from MLflow as pandas tables: final values per run and per-round histories."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from fedray.errors import FedrayError


def study_runs(uri: str, experiment: str) -> pd.DataFrame:
    """Finished study runs of `experiment` (mlflow.search_runs), one row per run.

    Raises:
        FedrayError: no such experiment, or no finished study in it.
    """
    mlflow.set_tracking_uri(uri)
    if MlflowClient(uri).get_experiment_by_name(experiment) is None:
        raise FedrayError(f"No MLflow experiment '{experiment}' in {uri}.")
    runs = mlflow.search_runs(
        experiment_names=[experiment],
        filter_string="tags.role = 'study' and attributes.status = 'FINISHED'",
        output_format="pandas",
    )
    if runs.empty:
        raise FedrayError(f"MLflow experiment '{experiment}' has no finished study yet.")
    return runs


def metric_histories(uri: str, run_ids: list[str], names: list[str]) -> pd.DataFrame:
    """Long table (run_id, metric, step, value) of every value logged under `names`."""
    client = MlflowClient(uri)
    rows = [
        {"run_id": run_id, "metric": name, "step": m.step, "value": m.value}
        for run_id in run_ids
        for name in names
        for m in client.get_metric_history(run_id, name)
    ]
    return pd.DataFrame(rows, columns=["run_id", "metric", "step", "value"])


def run_folder(uri: str | None, run_id: str) -> Path | None:
    """The results folder of MLflow run `run_id` (from its logged params), if it exists on this machine."""
    from fedray.tracking.mlflow import default_tracking_uri

    client = MlflowClient(uri or default_tracking_uri("results"))
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return None
    params = run.data.params
    results = params.get("tracking.results_dir")
    folder = Path(results) / run.info.run_name if results and run.info.run_name else None
    return folder if folder is not None and (folder / "config.resolved.yaml").is_file() else None
