"""Dynamic scheduling spreads each round over idle actors; pinned keeps hospitals home; results agree;
tasks name their cases in the case store."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import ray
import torch

from fedray.config import config_from_data, with_absolute_paths
from fedray.data.case_store import is_stored, store_root, stored_cases
from fedray.data.federation import prepare_hospitals
from fedray.messages import encode_state
from fedray.models.factory import build_model
from fedray.simulation.driver import Driver
from fedray.simulation.scheduler import RoundScheduler
from fedray.simulation.launch import run_study
from fedray.simulation.ledger import RoundLedger
from fedray.simulation.placement import release_placement, start_hospital_actors
from fedray.tracking.checkpoint import checkpoint_path, load_checkpoint
from tests.conftest import tiny_study

pytestmark = pytest.mark.ray

ROUNDS, SEED = 3, 3


def study(tmp_path, scheduling: str):
    data = tiny_study(tmp_path, rounds=ROUNDS, seed=SEED)
    data["federation"]["hospitals"].append({"name": "d", "organs": ["spleen", "stomach"], "cases": 2})
    data["federation"]["clients_per_round"] = 2
    data["resources"] = {"cpus_per_actor": 0.5, "actors": 2, "scheduling": scheduling}
    data["tracking"] = {**data["tracking"], "run_name": scheduling}
    config = with_absolute_paths(config_from_data(data))
    hospitals, test_dir = prepare_hospitals(config)
    summary = run_study(config, hospitals, test_dir)
    return summary, load_checkpoint(checkpoint_path(config.run_dir)).global_state


def test_dynamic_scheduling_balances_rounds_that_pinned_cannot(tmp_path, ray_local):
    pinned, pinned_weights = study(tmp_path, "pinned")
    dynamic, dynamic_weights = study(tmp_path, "dynamic")

    home = {h: actor["actor"] for actor in pinned["actors"] for h in actor["hospitals"]}
    names = ["a", "b", "c", "d"]
    expected = [0, 0]
    for r in range(1, ROUNDS + 1):  # the driver's draw: 2 of 4 hospitals per round from (seed, round)
        for i in np.random.default_rng([SEED, r]).choice(4, size=2, replace=False):
            expected[home[names[i]]] += 1
    assert expected != [ROUNDS, ROUNDS]  # this seed puts both of some round's hospitals on one home actor
    assert [actor["tasks"] for actor in pinned["actors"]] == expected
    assert [actor["tasks"] for actor in dynamic["actors"]] == [ROUNDS, ROUNDS]  # one each, every round
    assert all(np.array_equal(pinned_weights[k], dynamic_weights[k]) for k in pinned_weights)


def test_tasks_name_cases_in_the_store_and_an_actor_writes_a_missing_one(tmp_path, ray_local):
    config = with_absolute_paths(config_from_data(tiny_study(tmp_path, rounds=1)))
    hospitals, test_dir = prepare_hospitals(config)
    driver = Driver(config, hospitals, test_dir)
    scheduler = RoundScheduler(config, start_hospital_actors(config, hospitals), driver.client_store)
    try:
        scheduler.await_actors()
        torch.manual_seed(0)
        initial = {k: v.numpy() for k, v in build_model(config.model, len(config.data.organs)).state_dict().items()}
        assert not store_root(config.data).exists()  # no preprocessing step ran: the actors write what they need
        ledger = RoundLedger(driver.strategy, initial)
        scheduler.train_round(
            1, hospitals, ray.put(encode_state(initial)), None, ledger, True, on_progress=lambda done, ledger: None,
        )
        assert set(ledger.account.accepted) == {h.hospital_id for h in hospitals}
        for hospital in hospitals:  # a task carries paths, never arrays
            refs = scheduler.data[hospital.hospital_id]
            assert refs == stored_cases(hospital, config.data) and all(is_stored(ref) for ref in refs)
            assert len(pickle.dumps(refs)) < 2000 * hospital.num_cases
    finally:
        for actor in scheduler.actors:
            ray.kill(actor)
        release_placement(config)
