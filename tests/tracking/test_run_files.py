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


def test_rounds_csv_appends_a_round_and_reads_back_as_one_rewritten_whole(tmp_path):
    import pandas as pd

    files = RunFiles(tmp_path / "run")
    rows = [
        {"round": 1, "loss": 0.1 + 0.2, "bytes": 7345772},
        {"round": 2, "loss": np.float64(0.5), "bytes": np.int64(7345772)},
        {"round": 3, "loss": 0.25, "bytes": 1, "dice/mean": 0.75},  # a new column: the file is rewritten
        {"round": 4, "loss": float("nan"), "bytes": 2},  # no Dice this round: an empty cell
        {"round": 5, "loss": 1e-05, "bytes": 3, "dice/mean": np.float32(0.5)},
    ]
    for row in rows:
        files.add_round(row)
    lines = files.rounds_path.read_text().splitlines()
    assert lines == [
        "round,loss,bytes,dice/mean",
        "1,0.30000000000000004,7345772,",
        "2,0.5,7345772,",
        "3,0.25,1,0.75",
        "4,,2,",  # appended: the header already had every column of this row
        "5,1e-05,3,0.5",
    ]
    whole = tmp_path / "whole.csv"
    whole.write_text(pd.DataFrame(rows).to_csv(index=False))
    pd.testing.assert_frame_equal(pd.read_csv(files.rounds_path), pd.read_csv(whole))
