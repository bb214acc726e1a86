"""Dynamic scheduling spreads each round over idle actors; pinned keeps hospitals home; results agree;
tasks name their cases in the case store."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import ray
import torch
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from fedray.config import config_from_data, with_absolute_paths
from fedray.data.case_store import is_stored, store_root, stored_cases
from fedray.data.federation import prepare_hospitals
from fedray.messages import Metric, encode_state
from fedray.models.factory import build_model
from fedray.simulation.driver import Driver
from fedray.simulation.scheduler import MAX_HOSPITALS_PER_CALL, RoundScheduler, hospitals_per_call
from fedray.simulation.launch import run_study
from fedray.simulation.ledger import RoundLedger
from fedray.simulation.actors import HospitalActor
from fedray.simulation.placement import (
    HospitalActors,
    plan_actors,
    release_placement,
    reserve_placement,
    start_hospital_actors,
)
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
        scheduler.start_round(
            1, hospitals, ray.put(encode_state(initial)), None, ledger, True, on_progress=lambda done, ledger: None,
        ).finish()
        assert set(ledger.account.accepted) == {h.hospital_id for h in hospitals}
        for hospital in hospitals:  # a task carries paths, never arrays
            refs = scheduler.data[hospital.hospital_id]
            assert refs == stored_cases(hospital, config.data) and all(is_stored(ref) for ref in refs)
            assert len(pickle.dumps(refs)) < 2000 * hospital.num_cases
    finally:
        for actor in scheduler.actors:
            ray.kill(actor)
        release_placement(config)


def flaky_actor_class() -> type:
    """A hospital actor class whose first batch of several hospitals fails its first hospital once (of all
    actors: the marker file says which hospital failed; no marker path, no failure), and that remembers
    the batches it was sent.

    Made in a function, so Ray ships the class by value (workers cannot import a test module by name)."""

    class FlakyActor(HospitalActor):
        def __init__(self, config, threads: int, marker: str) -> None:
            super().__init__(config, threads)
            self.sent: list[list[str]] = []
            self.marker = marker
            train = self._worker._train_hospital

            def flaky(hospital, *args, **kwargs):
                if hospital.hospital_id == self.flake:
                    self.flake = None
                    raise RuntimeError("a transient failure")
                return train(hospital, *args, **kwargs)

            self.flake = None
            self._worker._train_hospital = flaky

        def run_batch(self, tasks):
            ids = [task.hospital.hospital_id for task in tasks]
            self.sent.append(ids)
            if len(ids) > 1 and self.marker is not None:
                try:
                    with open(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY), "w") as out:
                        out.write(ids[0])
                    self.flake = ids[0]
                except FileExistsError:
                    pass
            return super().run_batch(tasks)

        def batches(self) -> list[list[str]]:
            return self.sent

    return FlakyActor


def round_with(tmp_path, run_name: str, hospitals_per_call: int | None, flaky: bool = False, extra: str = "defgh",
               fail: bool = True):
    """One round of 3 + len(extra) hospitals (8) on 2 actors driven by RoundScheduler: (new global state,
    scheduler, faults, batches); `flaky` records the batches sent, and with `fail` one hospital fails once."""
    data = tiny_study(tmp_path, rounds=1)
    data["federation"]["hospitals"] += [{"name": n, "organs": ["spleen", "stomach"], "cases": 2} for n in extra]
    data["resources"] = {"cpus_per_actor": 0.5, "actors": 2, "hospitals_per_call": hospitals_per_call}
    data["tracking"] = {**data["tracking"], "run_name": run_name}
    config = with_absolute_paths(config_from_data(data))
    hospitals, test_dir = prepare_hospitals(config)
    driver = Driver(config, hospitals, test_dir)
    if flaky:
        plans = plan_actors(config, hospitals, ray.cluster_resources())
        placement = reserve_placement(config, plans)
        actors = [
            ray.remote(flaky_actor_class()).options(
                num_cpus=plan.cpus,
                scheduling_strategy=PlacementGroupSchedulingStrategy(placement, placement_group_bundle_index=g),
            ).remote(config, 1, str(tmp_path / f"{run_name}.flaked") if fail else None)
            for g, plan in enumerate(plans)
        ]
        started = HospitalActors(plans, placement, actors)
    else:
        started = start_hospital_actors(config, hospitals)
    scheduler = RoundScheduler(config, started, driver.client_store)
    try:
        scheduler.await_actors()
        torch.manual_seed(0)
        initial = {k: v.numpy() for k, v in build_model(config.model, len(config.data.organs)).state_dict().items()}
        ledger = RoundLedger(driver.strategy, initial)
        progress = []
        in_flight = scheduler.start_round(
            1, hospitals, ray.put(encode_state(initial)), None, ledger, True,
            on_progress=lambda done, ledger: progress.append(done),
        )
        # the first calls are queued, but nothing of the round is taken in before `finish`
        assert progress == [] and scheduler.outcomes == {} and not ledger.account.compute_s
        faults = in_flight.finish()
        assert progress == list(range(1, len(hospitals) + 1))  # every hospital counted, once
        assert set(ledger.account.accepted) == {h.hospital_id for h in hospitals}
        batches = ray.get([actor.batches.remote() for actor in scheduler.actors]) if flaky else None
        return ledger.new_global_state(), scheduler, faults, batches
    finally:
        for actor in scheduler.actors:
            ray.kill(actor)
        release_placement(config)


def test_a_round_batches_hospitals_per_call_and_a_failed_one_is_retried_alone(tmp_path, ray_local):
    one_by_one, single, _, _ = round_with(tmp_path, "single", hospitals_per_call=1)
    assert single.train_calls == 8
    batched, flaky, faults, batches = round_with(tmp_path, "flaky", hospitals_per_call=None, flaky=True)
    failed = (tmp_path / "flaky.flaked").read_text()
    sent = [batch for actor in batches for batch in actor]
    assert faults[Metric.RETRIES.value] == 1 and faults[Metric.DROPPED.value] == 0
    assert sum(failed in batch for batch in sent) == 2 and [failed] in sent  # its batch, then alone
    assert any(len(batch) > 1 for batch in sent)
    # 8 hospitals on 2 actors: calls of 2, 2, 1, 1 dispatched at once, then 1 and 1; the retry alone
    assert flaky.train_calls == len(sent) == 7
    assert all(np.array_equal(batched[k], one_by_one[k]) for k in one_by_one)  # same update as unbatched


def test_a_small_round_gives_every_actor_the_same_first_share_and_then_single_hospitals(tmp_path, ray_local):
    # 10 hospitals on 2 actors: the first pass sizes both calls from the 10 (3 and 3, not 3 and 2), the
    # queued pass from the 4 left (1 and 1, not 2 and 1), and the last 2 go one by one to whoever is free
    _, scheduler, _, batches = round_with(tmp_path, "factoring", None, flaky=True, extra="defghij", fail=False)
    assert sorted(len(batch) for actor in batches for batch in actor) == [1, 1, 1, 1, 3, 3]
    assert scheduler.train_calls == 6


def calls_for(hospitals: int, actors: int, fixed: int | None = None) -> list[int]:
    """The call sizes hospitals_per_call gives a round handed out one call at a time (no pipelining and
    no factoring: the scheduler sizes a whole pass over the actors at once)."""
    sizes = []
    while hospitals:
        sizes.append(hospitals_per_call(hospitals, actors, fixed, batched=True))
        hospitals -= sizes[-1]
    return sizes


def test_calls_carry_fewer_hospitals_as_a_round_runs_out():
    hundred = calls_for(100, 2)
    assert 10 <= len(hundred) <= 20 and max(hundred) == MAX_HOSPITALS_PER_CALL and hundred[-4:] == [1, 1, 1, 1]
    assert hundred == sorted(hundred, reverse=True)  # never a long call after a short one
    assert calls_for(10, 2) == [3, 2, 2, 1, 1, 1]
    assert calls_for(2, 2) == [1, 1] and calls_for(4, 4) == [1, 1, 1, 1]  # small rounds: one per actor
    assert calls_for(10, 2, fixed=4) == [4, 3, 2, 1] and calls_for(2, 2, fixed=8) == [1, 1]  # an even share at most
    assert hospitals_per_call(100, 2, None, batched=False) == 1  # updates come back in the replies
    assert hospitals_per_call(100, 2, 5, batched=False) == 5
