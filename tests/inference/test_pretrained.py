"""fedray teachers: a study's pre-trained models (FedKD's teachers) scored on its test set, head by head."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fedray.cli import main
from fedray.config import SiteConfig
from fedray.data.datasets import load_cases
from fedray.data.federation import held_out_folder
from fedray.data.sites import read_site_cases
from fedray.errors import ConfigError
from fedray.inference.pretrained import score_pretrained
from fedray.messages import decode_state
from fedray.metrics.segmentation import dice_from_counts
from fedray.models.factory import build_model
from fedray.strategies.base import state_to_torch
from fedray.tracking.checkpoint import checkpoint_path, load_checkpoint
from fedray.training.evaluate import predict
from tests.conftest import TINY_MULTIHEAD, train_tiny_study

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def fedkd_run(tmp_path_factory, ray_local):
    tmp_path = tmp_path_factory.mktemp("fedkd_teachers")
    config, _, _ = train_tiny_study(
        tmp_path, "fedkd", rounds=1, model=TINY_MULTIHEAD, method={"name": "fedkd", "params": {"teacher_steps": 6}}
    )
    return config


def test_each_teacher_head_is_scored_as_its_own_organ_on_the_test_set(fedkd_run):
    config = fedkd_run
    rows = score_pretrained(config.run_dir)
    organs = list(config.data.organs)
    # Hospitals a (liver, spleen, kidney_left), b (kidney_right, pancreas), c (stomach, gallbladder,
    # liver): three teachers, one row per head; liver is taught by a (2 cases each, lower index).
    assert [(r["model"], r["organ"], r["used_for_organ"]) for r in rows] == [
        ("teacher/a", "liver", True), ("teacher/a", "spleen", True), ("teacher/a", "kidney_left", True),
        ("teacher/b", "kidney_right", True), ("teacher/b", "pancreas", True),
        ("teacher/c", "liver", False), ("teacher/c", "stomach", True), ("teacher/c", "gallbladder", True),
    ]
    # By hand: each teacher's own head k, thresholded at sigmoid 0.5 where it is its most probable head,
    # against the test label of that organ, counts summed over the test volumes.
    blobs = load_checkpoint(checkpoint_path(config.run_dir)).blobs
    listed = read_site_cases(SiteConfig(path=str(held_out_folder(config))), require_files=True).cases
    cases = load_cases(listed, organs, config.data.hu_window, config.data.preprocess)
    for model_name in ("teacher/a", "teacher/b", "teacher/c"):
        own = [r["organ"] for r in rows if r["model"] == model_name]
        heads = [o for o in organs if o in own]  # the teacher's head order is the study's organ order
        teacher = build_model(config.model, len(heads))
        teacher.load_state_dict(state_to_torch(decode_state(blobs[f"method/{model_name}"])))
        counts = np.zeros((len(heads), 3), dtype=np.int64)
        for case in cases:
            labels = predict(teacher, case["image"][None], "sigmoid", config.eval)  # 1..len(heads), own numbering
            truth = case["original_label"][0].long()
            for j, organ in enumerate(heads):
                mine, theirs = labels == j + 1, truth == organs.index(organ) + 1
                counts[j] += [int((mine & theirs).sum()), int((mine & ~theirs).sum()), int((~mine & theirs).sum())]
        dice = dice_from_counts(counts)
        for j, organ in enumerate(heads):
            row = next(r for r in rows if r["model"] == model_name and r["organ"] == organ)
            assert row["dice"] == pytest.approx(float(dice[j]), abs=1e-12, nan_ok=True)
    assert any(r["dice"] > 0 for r in rows)  # the check above compared something


def test_the_cli_prints_and_writes_the_rows_and_a_method_without_teachers_is_refused(fedkd_run, tmp_path, capsys):
    out = tmp_path / "teachers.json"
    assert main(["teachers", str(fedkd_run.run_dir), "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert {r["model"] for r in written["rows"]} == {"teacher/a", "teacher/b", "teacher/c"}
    assert "teacher/a" in capsys.readouterr().err  # the console writes to stderr
    fedavg, _, _ = train_tiny_study(tmp_path, "fedavg", rounds=1, model=TINY_MULTIHEAD, method={"name": "fedavg"})
    with pytest.raises(ConfigError, match="pre-trained no models"):
        score_pretrained(fedavg.run_dir)


def test_a_run_without_its_checkpoint_is_refused_by_name(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(ConfigError):
        score_pretrained(tmp_path / "run")
