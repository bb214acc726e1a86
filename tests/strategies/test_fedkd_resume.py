"""A FedKD study killed during teacher pre-training resumes in the same MLflow run, bit-identical."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from fedray.config import config_from_data, load_config, with_absolute_paths
from fedray.data.federation import prepare_hospitals
from fedray.simulation.launch import run_study
from fedray.tracking.checkpoint import checkpoint_path, load_checkpoint
from tests.conftest import kill_when, start_cli, tiny_study

pytestmark = pytest.mark.ray


def fedkd_study(tmp_path, name: str) -> dict:
    data = tiny_study(
        tmp_path,
        model={"name": "multihead_unet", "output": "sigmoid", "channels": [4, 8, 16], "norm_groups": 2},
        method={"name": "fedkd", "params": {"teacher_steps": 40}},
        rounds=2,
        resources={"cpus_per_actor": 1.0, "actors": 1},  # one actor: teachers are trained one after another
    )
    data["tracking"] = {**data["tracking"], "run_name": name}
    return data


def teachers_in(checkpoint) -> set[str]:
    return {k for k in checkpoint.blobs if k.startswith("method/teacher/")}


def test_sigkill_during_teacher_pretraining_then_resume_equals_uninterrupted(tmp_path, ray_local):
    reference = with_absolute_paths(config_from_data(fedkd_study(tmp_path, "reference")))
    hospitals, test_dir = prepare_hospitals(reference)
    run_study(reference, hospitals, test_dir)

    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(fedkd_study(tmp_path, "killed")))
    killed_dir = tmp_path / "results" / "killed"
    process = start_cli("run", str(path))
    killed = kill_when(process, killed_dir, lambda checkpoint: bool(teachers_in(checkpoint)), poll_s=0.05)
    assert killed.round == 0 and 1 <= len(teachers_in(killed)) < 3, "killed before round 1, teachers half done"

    config = load_config(killed_dir / "config.resolved.yaml")
    hospitals, test_dir = prepare_hospitals(config)
    summary = run_study(config, hospitals, test_dir, resume=True)

    final_ref, final = load_checkpoint(checkpoint_path(reference.run_dir)), load_checkpoint(checkpoint_path(killed_dir))
    assert final.round == 2 and teachers_in(final) == teachers_in(final_ref)
    assert all(final_ref.blobs[k] == final.blobs[k] for k in teachers_in(final))  # same teachers
    assert all(np.array_equal(v, final.global_state[k]) for k, v in final_ref.global_state.items())
    assert summary["run_id"] == killed.meta["run_id"]  # the same MLflow run, continued
    run = MlflowClient(fedkd_study(tmp_path, "x")["tracking"]["uri"]).get_run(summary["run_id"])
    assert run.info.status == "FINISHED"
