"""SCAFFOLD, FedDyn and FedBN in real studies: bit-identical on 1 and 4 actors, and after SIGKILL + resume."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from fedray.config import config_from_data, load_config, with_absolute_paths
from fedray.data.federation import prepare_hospitals
from fedray.messages import TIMING_METRICS
from fedray.simulation.launch import run_study
from fedray.tracking.checkpoint import checkpoint_path, load_checkpoint
from tests.conftest import kill_when, start_cli, tiny_study

pytestmark = pytest.mark.ray

METHODS = ["scaffold", "feddyn", "fedbn"]


def marked_slow(*slow: str) -> list:
    """METHODS with `slow` ones marked: each guarantee keeps one method in the default run (suite time)."""
    return [pytest.param(m, marks=pytest.mark.slow) if m in slow else m for m in METHODS]
MULTIHEAD = {"name": "multihead_unet", "output": "sigmoid", "channels": [4, 8, 16], "norm_groups": 2}


def study(tmp_path, method: str, name: str, **overrides) -> dict:
    data = tiny_study(tmp_path, model=MULTIHEAD, method={"name": method}, **overrides)
    data["federation"]["hospitals"].append({"name": "d", "organs": ["spleen", "stomach"], "cases": 1})
    data["federation"]["clients_per_round"] = 3  # a sample, so |S| / N matters for SCAFFOLD and FedDyn
    data["tracking"] = {**data["tracking"], "run_name": name}
    return data


def run(data: dict, resume: bool = False) -> dict:
    config = with_absolute_paths(config_from_data(data)) if isinstance(data, dict) else data
    hospitals, test_dir = prepare_hospitals(config)
    return run_study(config, hospitals, test_dir, resume=resume)


@pytest.mark.parametrize("method", marked_slow("scaffold", "feddyn"))
def test_final_weights_do_not_depend_on_the_number_of_actors(tmp_path, ray_local, method):
    finals = []
    for actors in (1, 4):  # one actor against several (tests/simulation/test_determinism.py also runs 2)
        data = study(tmp_path, method, f"{method}-actors{actors}", rounds=3)
        data["resources"] = {"cpus_per_actor": 0.5, "actors": actors}
        summary = run(data)
        finals.append(load_checkpoint(checkpoint_path(tmp_path / "results" / f"{method}-actors{actors}")))
        assert not np.isnan(summary["dice/mean"])
    one, *others = finals
    for other in others:
        assert all(np.array_equal(one.global_state[k], other.global_state[k]) for k in one.global_state)
        assert one.blobs.keys() == other.blobs.keys()
        assert all(one.blobs[k] == other.blobs[k] for k in one.blobs)  # server state too (c, h)


# all three slow (suite time): SIGKILL + resume equality runs by default in tests/simulation/test_resume.py
# (FedAvg) and tests/strategies/test_fedkd_resume.py (teachers mid-preparation); client state across
# a restart in tests/tracking/test_client_store.py
@pytest.mark.parametrize("method", marked_slow("scaffold", "feddyn", "fedbn"))
def test_sigkill_then_resume_equals_uninterrupted(tmp_path, ray_local, method):
    rounds = 4
    reference = study(tmp_path, method, "reference", rounds=rounds)
    run(reference)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study(tmp_path, method, "killed", rounds=rounds)))
    killed_dir = tmp_path / "results" / "killed"
    process = start_cli("run", str(path))
    assert kill_when(process, killed_dir, lambda checkpoint: checkpoint.round >= 2).round < rounds
    run(load_config(killed_dir / "config.resolved.yaml"), resume=True)

    final_ref = load_checkpoint(checkpoint_path(tmp_path / "results" / "reference"))
    final_resumed = load_checkpoint(checkpoint_path(killed_dir))
    differ = [k for k, v in final_ref.global_state.items() if not np.array_equal(v, final_resumed.global_state[k])]
    assert not differ, f"weights differ: {differ[:5]}"
    assert final_ref.blobs.keys() == final_resumed.blobs.keys()
    assert [k for k in final_ref.blobs if final_ref.blobs[k] != final_resumed.blobs[k]] == []
    timing = sorted(TIMING_METRICS)
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "results" / "reference" / "rounds.csv").drop(columns=timing),
        pd.read_csv(killed_dir / "rounds.csv").drop(columns=timing),
    )
