"""The run's folder: config.resolved.yaml, rounds.csv (one row per round) and summary.json."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedray.atomic import atomic_write_text
from fedray.config import StudyConfig, save_config
from fedray.metrics.rows import HOSPITAL_COLUMNS
from fedray.tracking.callbacks import Callback, RunContext
from fedray.tracking.checksums import ChecksumCache
from fedray.tracking.provenance import data_manifest


class RunFiles:
    """Writes results/<run_name>/: whole files replaced atomically, so a crash never leaves half a
    file; the per-round tables appended (a resume rewrites or truncates them from the checkpoint)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict[str, Any]] = []
        self.columns: list[str] = []  # rounds.csv's header as last written

    @property
    def config_path(self) -> Path:
        return self.run_dir / "config.resolved.yaml"

    @property
    def hospitals_path(self) -> Path:
        return self.run_dir / "hospitals.csv"

    @property
    def cases_path(self) -> Path:
        return self.run_dir / "cases.csv"

    def clear_previous_run(self) -> None:
        """A new study in an existing folder (`fedray run --overwrite`, a sweep cell started again):
        remove what an earlier run left that this one would otherwise append to or read back (its
        per-round tables, hospitals' states and checkpoints)."""
        import shutil

        for name in ("hospitals.csv", "cases.csv", "rounds.csv", "summary.json"):
            (self.run_dir / name).unlink(missing_ok=True)
        for name in ("client_state", "checkpoints"):
            shutil.rmtree(self.run_dir / name, ignore_errors=True)

    def append_rows(self, path: Path, rows: list[dict[str, Any]], columns: Sequence[str] | None = None) -> None:
        """Append one round's rows to a per-round table (appended, not rewritten: hospitals.csv grows
        with rounds x hospitals, cases.csv with evaluations x volumes x organs)."""
        if not rows:
            return
        new = not path.is_file()
        with open(path, "a") as handle:
            pd.DataFrame(rows, columns=columns).to_csv(handle, index=False, header=new)

    def truncate_rows(self, path: Path, through_round: int) -> None:
        """On resume: drop a per-round table's rows of rounds after the checkpoint (they are redone)."""
        if path.is_file():
            table = pd.read_csv(path, dtype=str, keep_default_na=False)  # text kept as written (ids, floats)
            atomic_write_text(path, table[table["round"].astype(int) <= through_round].to_csv(index=False))

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
        """Add one round's metrics to rounds.csv."""
        self.rows.append(row)
        self.write_last_round()

    def rewrite(self) -> None:
        """Write rounds.csv from the rows held (after a resume, the checkpoint's rows)."""
        table = pd.DataFrame(self.rows)
        atomic_write_text(self.rounds_path, table.to_csv(index=False))
        self.columns = [str(c) for c in table.columns]

    def write_last_round(self) -> None:
        """Append the last row held to rounds.csv, or rewrite the file if the row brings a new column.

        Appended, because rewriting every round costs O(rounds) a round (70 ms at 1,000 rounds,
        against 0.1 ms for one line). The driver's rows all have the same keys (NaN where a round
        was not evaluated), so the file is written whole at the first round and on resume only; a
        row with a column the header lacks rewrites it. A crash mid-line is harmless: a resume
        rewrites the file from the checkpoint's rows.
        """
        row = self.rows[-1]
        if not self.columns or not self.rounds_path.is_file() or not row.keys() <= set(self.columns):
            self.rewrite()
            return
        with open(self.rounds_path, "a", newline="") as handle:
            csv.writer(handle, lineterminator="\n").writerow([_csv_cell(row.get(c)) for c in self.columns])

    def write_json(self, name: str, data: dict[str, Any]) -> None:
        """Save a JSON file in the run folder."""
        atomic_write_text(self.run_dir / name, json.dumps(data, indent=2))

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Save the final values (NaN written as null)."""
        clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in summary.items()}
        atomic_write_text(self.summary_path, json.dumps(clean, indent=2))


class RunFilesCallback(Callback):
    """Keeps the run folder: the resolved config and data manifest at the start, rounds.csv every
    round, summary.json at the end."""

    def __init__(self) -> None:
        self.files: RunFiles | None = None

    def on_run_start(self, run: RunContext) -> None:
        cfg = run.config
        self.files = files = RunFiles(cfg.run_dir)
        if run.resumed is not None:
            files.write_config(cfg)  # where the folder is now, and a raised rounds cap (resume --rounds)
            files.rows = run.rows
            files.rewrite()  # rounds after the checkpoint are redone: drop them from rounds.csv
            for path in (files.hospitals_path, files.cases_path):
                files.truncate_rows(path, run.resumed.round)
            return
        files.clear_previous_run()
        files.write_config(cfg)
        cache = Path(cfg.data.cache_dir) / "checksums.sqlite" if cfg.data.persistent_cache else None
        manifest = data_manifest({h.hospital_id: h.files for h in run.hospitals}, run.test_dir, ChecksumCache(cache))
        held_out = {h.hospital_id: [c.case_id for c in h.validation] for h in run.hospitals if h.validation}
        if held_out:  # federation.local_validation: which cases each hospital did not train on
            manifest["local_validation"] = held_out
        files.write_json("data_manifest.json", manifest)
        files.write_json("hospitals.json", {"hospitals": [h.record() for h in run.hospitals]})
        run.tags["data_manifest_sha256"] = manifest["study"]
        if run.skipped:
            files.write_json("skipped_cases.json", run.skipped)
        files.rows = run.rows

    def on_round_end(self, run: RunContext, row: dict[str, Any]) -> None:
        self.files.write_last_round()  # run.rows, shared with the driver, already ends with `row`
        self.files.append_rows(self.files.hospitals_path, run.hospital_rows, HOSPITAL_COLUMNS)
        self.files.append_rows(self.files.cases_path, run.case_rows)

    def on_run_end(self, run: RunContext, status: str, summary: dict[str, Any] | None) -> None:
        if summary is not None:
            self.files.write_summary(summary)


def _csv_cell(value: Any) -> Any:
    """A rounds.csv cell as pandas' to_csv writes a float64 or int column's: empty for a missing value
    or NaN, floats by repr (numpy's too: csv would write np.float64's repr, "np.float64(0.5)"). Not
    for a column pandas would type otherwise (all float32, or ints and floats mixed), which the
    driver's rows never have; either way the text reads back as the same numbers."""
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        return "" if math.isnan(value) else repr(float(value))
    if isinstance(value, np.integer):
        return int(value)
    return value
