"""Local-only training on real Ray actors: nothing is communicated, each hospital keeps its own model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from fedray.config import config_from_data, with_absolute_paths
from fedray.data.datasets import load_folder
from fedray.data.federation import prepare_hospitals
from fedray.messages import Metric, decode_state
from fedray.metrics.segmentation import dice_from_counts
from fedray.models.factory import build_model
from fedray.simulation.launch import run_study
from fedray.strategies.base import state_to_torch
from fedray.tracking.client_store import ClientStateStore
from fedray.training.evaluate import evaluate
from tests.conftest import tiny_study

pytestmark = pytest.mark.ray


def test_local_only_keeps_one_model_per_hospital_and_judges_each_organ_by_its_owner(tmp_path, ray_local):
    data = tiny_study(tmp_path, rounds=2, method={"name": "local"})
    data["model"] = {**data["model"], "output": "sigmoid"}
    config = with_absolute_paths(config_from_data(data))
    hospitals, test_dir = prepare_hospitals(config)
    summary = run_study(config, hospitals, test_dir)

    rounds = pd.read_csv(config.run_dir / "rounds.csv")
    assert (rounds[Metric.BYTES_TOTAL.value] == 0).all()  # nothing ever leaves a hospital
    store = ClientStateStore(config.run_dir / "client_state")
    assert store.hospitals() == ["a", "b", "c"]
    states = {h: decode_state(store.get(h, 3)) for h in store.hospitals()}
    assert not np.array_equal(states["a"]["model.0.conv.weight"], states["b"]["model.0.conv.weight"])

    # Owners by hand (most cases, then lowest index): a owns liver, spleen, kidney_left; b kidney_right,
    # pancreas; c stomach, gallbladder. The study's Dice must be exactly what those models score together.
    assert list(config.data.organs[:3]) == ["liver", "spleen", "kidney_left"]
    models = {}
    for hospital, state in states.items():
        models[hospital] = build_model(config.model, len(config.data.organs))
        models[hospital].load_state_dict(state_to_torch(state))

    class ByHand(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.members = torch.nn.ModuleDict(models)

        def forward(self, x):
            a, b, c = (self.members[h](x) for h in "abc")
            return torch.cat([a[:, 0:3], b[:, 3:5], c[:, 5:7]], dim=1)

    cases = load_folder(test_dir, config.data.organs, config.data.hu_window)
    expected = dice_from_counts(evaluate(ByHand(), cases, "sigmoid", config.eval, len(config.data.organs)).counts)
    got = np.array([summary[f"dice/{organ}"] for organ in config.data.organs])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12, equal_nan=True)
