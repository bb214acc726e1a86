"""Same seed, same final weights, on 1, 2 or 4 hospital actors (each pre-summing its own hospitals)."""

from __future__ import annotations

import numpy as np
import pytest

from fedray.config import config_from_data, with_absolute_paths
from fedray.data.federation import prepare_hospitals
from fedray.simulation.launch import run_study
from fedray.tracking.checkpoint import checkpoint_path, load_checkpoint
from tests.conftest import tiny_study

pytestmark = pytest.mark.ray


def final_weights(tmp_path, actors: int) -> dict:
    data = tiny_study(tmp_path, rounds=2)
    data["federation"]["hospitals"].append({"name": "d", "organs": ["spleen", "stomach"], "cases": 1})
    data["resources"] = {"cpus_per_actor": 0.5, "actors": actors}
    data["tracking"] = {**data["tracking"], "run_name": f"actors{actors}"}
    config = with_absolute_paths(config_from_data(data))
    hospitals, test_dir = prepare_hospitals(config)
    run_study(config, hospitals, test_dir)
    return load_checkpoint(checkpoint_path(config.run_dir)).global_state


def test_final_weights_do_not_depend_on_the_number_of_actors(tmp_path, ray_local):
    one, two, four = (final_weights(tmp_path, n) for n in (1, 2, 4))
    assert all(np.array_equal(one[k], two[k]) and np.array_equal(one[k], four[k]) for k in one)  # bit-identical
