"""configs/paper_mots7.yaml runs end to end (shrunk): 7 MOTS-like sites with tumours, FedKD, multi-head U-Net."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedray.config import load_config, with_absolute_paths
from fedray.data.federation import prepare_hospitals
from fedray.simulation.launch import run_study

pytestmark = pytest.mark.ray


def test_paper_study_runs_on_the_phantom_with_tumours(tmp_path, ray_local):
    config = with_absolute_paths(
        load_config(
            Path(__file__).resolve().parents[1] / "configs" / "paper_mots7.yaml",
            overrides=[
                "rounds=1",
                f"data.cache_dir={tmp_path}/data",
                "data.phantom.shape=[32,32,32]",
                "data.phantom.test_cases=2",
                "data.patch_size=[16,16,16]",
                "model.channels=[4,8,16]",
                "model.blocks=[1,1,1]",
                "model.norm_groups=2",
                "method.params.teacher_steps=2",
                "train.local_steps=2",
                "eval.roi_size=[16,16,16]",
                "resources.cpus_per_actor=0.5",
                f"tracking.results_dir={tmp_path}/results",
                f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
            ],
        )
    )
    hospitals, test_dir = prepare_hospitals(config)
    assert len(hospitals) == 7 and ("liver", "liver_tumour") == hospitals[0].organs
    summary = run_study(config, hospitals, test_dir)
    for structure in ("liver", "gallbladder", "liver_tumour", "kidney_tumour", "pancreas_tumour"):
        assert f"dice/{structure}" in summary and f"hd95/{structure}" in summary
    assert summary["comm/bytes_preparation"] > 0  # organ teachers were pre-trained and shared
