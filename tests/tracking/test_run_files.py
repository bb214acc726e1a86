"""The run folder: a new study clears an earlier run's leftovers; resume truncates per-round tables as text."""

from __future__ import annotations

import numpy as np

from fedray.simulation.worker import _finite
from fedray.tracking.run_files import RunFiles


def test_a_new_study_in_an_old_folder_clears_what_it_would_append_to_or_read_back(tmp_path):
    files = RunFiles(tmp_path / "run")
    for name in ("hospitals.csv", "cases.csv", "rounds.csv", "summary.json", "data_manifest.json"):
        (files.run_dir / name).write_text("old")
    for folder in ("client_state/a", "checkpoints"):
        (files.run_dir / folder).mkdir(parents=True)
        (files.run_dir / folder / "x.npz").write_bytes(b"old")
    files.clear_previous_run()
    left = sorted(p.name for p in files.run_dir.iterdir())
    assert left == ["data_manifest.json"]  # rewritten by the new run anyway; nothing old is read back


def test_resume_truncates_a_table_keeping_its_text(tmp_path):
    files = RunFiles(tmp_path / "run")
    files.append_rows(files.hospitals_path, [{"round": 1, "hospital": "001", "loss": 0.1234567890123}])
    files.append_rows(files.hospitals_path, [{"round": 2, "hospital": "002", "loss": 0.5}])
    files.truncate_rows(files.hospitals_path, 1)
    assert files.hospitals_path.read_text().splitlines() == ["round,hospital,loss", "1,001,0.1234567890123"]


def test_a_diverged_update_or_state_is_not_finite():
    assert _finite({"w": np.ones(3, np.float32), "n": np.array(3)})
    assert not _finite({"w": np.array([1.0, np.nan], np.float32)})
    assert not _finite({"w": np.array([np.inf])})
