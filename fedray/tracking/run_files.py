"""The run's folder: config.resolved.yaml, rounds.csv (one row per round) and summary.json."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

from fedray.config import StudyConfig, save_config


class RunFiles:
    """Writes results/<run_name>/; each file is replaced atomically so a crash never leaves half a file."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict[str, Any]] = []

    @property
    def config_path(self) -> Path:
        return self.run_dir / "config.resolved.yaml"

    @property
    def rounds_path(self) -> Path:
        return self.run_dir / "rounds.csv"

    @property
    def summary_path(self) -> Path:
        return self.run_dir / "summary.json"

    def write_config(self, config: StudyConfig) -> None:
        """Save the resolved config."""
        save_config(config, self.config_path)

    def add_round(self, row: dict[str, Any]) -> None:
        """Append one round's metrics and rewrite rounds.csv."""
        self.rows.append(row)
        self.rewrite()

    def rewrite(self) -> None:
        """Write rounds.csv from the rows held (after a resume, the checkpoint's rows)."""
        temporary = self.rounds_path.with_suffix(".csv.tmp")
        pd.DataFrame(self.rows).to_csv(temporary, index=False)
        os.replace(temporary, self.rounds_path)

    def write_json(self, name: str, data: dict[str, Any]) -> None:
        """Save a JSON file in the run folder."""
        temporary = self.run_dir / f"{name}.tmp"
        temporary.write_text(json.dumps(data, indent=2))
        os.replace(temporary, self.run_dir / name)

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Save the final values (NaN written as null)."""
        clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in summary.items()}
        temporary = self.summary_path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(clean, indent=2))
        os.replace(temporary, self.summary_path)
