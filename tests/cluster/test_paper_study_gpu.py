"""cluster/paper_study_gpu.py (the paper-shaped study packed on one GPU) runs: its CPU smoke mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# A whole FedKD study (7 actors, teacher pre-training, evaluation) in a subprocess: about a minute.
pytestmark = [pytest.mark.ray, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_paper_study_smoke_run_on_cpu_writes_the_record(tmp_path):
    out = tmp_path / "paper_study.json"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    subprocess.run(
        [sys.executable, str(ROOT / "cluster" / "paper_study_gpu.py"), "--tiny", "--out", str(out)],
        check=True, env=env, capture_output=True, timeout=600,
    )
    record = json.loads(out.read_text())
    assert record["mode"] == "tiny (CPU smoke)" and record["actors"] == 7 and record["rounds"] == 2
    assert len(record["train_round_s"]) == 2 and record["median_round_s_after_first"] > 0
    assert record["projected_1000_rounds_h"] == pytest.approx(record["median_round_s_after_first"] * 1000 / 3600)
    assert record["gpu"] is None  # no nvidia-smi sampling in smoke mode
