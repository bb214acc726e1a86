"""Report inputs read from study folders (summary.json, rounds.csv, config): no tracking store needed."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml

from fedray.config import config_digest, flatten
from fedray.errors import FedrayError
from fedray.messages import summary_metrics
from fedray.tracking.provenance import platforms_label


def study_folders(paths: list[Path]) -> list[Path]:
    """The finished study folders among `paths`: each path is one (it has summary.json) or holds them.

    Raises:
        FedrayError: a path does not exist, or none of them holds a finished study.
    """
    found = []
    for path in paths:
        if not path.is_dir():
            raise FedrayError(f"'{path}' is not a folder (give study folders, or folders that hold them).")
        found += [path] if (path / "summary.json").is_file() else sorted(
            p for p in path.iterdir() if (p / "summary.json").is_file())
    if not found:
        raise FedrayError(f"No finished study (a folder with summary.json) in {', '.join(map(str, paths))}.")
    return found


def folder_runs(folders: list[Path], names: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The tables `fedray report` reads from MLflow, from study folders instead.

    Returns:
        runs: one row per study, as `fedray.tracking.query.study_runs` (run_id, tags.*, params.*,
            metrics.* with each metric's last value); histories: (run_id, metric, step, value) of
            the `names` metrics, as `metric_histories`.
    """
    runs, histories = [], []
    for folder in folders:
        config = yaml.safe_load((folder / "config.resolved.yaml").read_text())
        summary = json.loads((folder / "summary.json").read_text())
        rounds = pd.read_csv(folder / "rounds.csv")
        flat = flatten(config)
        run_id = folder.name  # unique within a sweep: <sweep>__<variant>__s<seed>
        row = {
            "run_id": run_id,
            "tags.mlflow.runName": config.get("tracking", {}).get("run_name") or folder.name,
            "tags.seed": str(config["seed"]),
            "tags.study": config["name"],
            "tags.config_digest": config_digest(flat),
            "tags.compute_platforms": platforms_label(summary.get("platforms")),
            "run_dir": str(folder),  # where the report's segmentation panel looks for the checkpoint
            **{f"params.{k}": str(v) for k, v in flat.items()},
            **{f"metrics.{k}": float(v) for k, v in rounds.iloc[-1].items() if k not in ("round", "clients")},
        }
        row |= {f"metrics.{k}": v for k, v in summary_metrics(summary).items()}
        runs.append(row)
        for name in names:
            if name in rounds:
                histories += [{"run_id": run_id, "metric": name, "step": int(r), "value": float(v)}
                              for r, v in zip(rounds["round"], rounds[name])
                              if pd.notna(v)]  # a blank cell: not measured that round, not in MLflow's history
    return pd.DataFrame(runs), pd.DataFrame(histories, columns=["run_id", "metric", "step", "value"])
