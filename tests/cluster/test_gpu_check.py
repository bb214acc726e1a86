"""cluster/gpu_check.py (the one-shot GPU script) still runs: its CPU smoke mode, on a private Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # about 20 s; like cluster/paper_study_gpu.py's smoke test, run with -m slow
def test_gpu_check_smoke_run_on_cpu(tmp_path):
    out = tmp_path / "check.json"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    subprocess.run(
        [sys.executable, str(ROOT / "cluster" / "gpu_check.py"), "--tiny", "--steps", "2", "--out", str(out)],
        check=True, env=env, capture_output=True, timeout=300,
    )
    record = json.loads(out.read_text())
    assert record["actors"] == 4 and record["same_gpu_for_all"]
    assert record["updates_summed_per_actor"] == [1, 1, 1, 1] and len(record["train_losses"]) == 4
