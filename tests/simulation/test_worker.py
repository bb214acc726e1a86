"""A hospital actor's round, run in-process: the partial sum it returns equals folding each update."""

from __future__ import annotations

import numpy as np
import torch

from fedray.config import config_from_data, with_absolute_paths
from fedray.data.federation import prepare_hospitals
from fedray.messages import encode_state
from fedray.models.factory import build_model
from fedray.simulation.ledger import RoundLedger
from fedray.simulation.worker import HospitalWorker
from tests.conftest import tiny_study


def test_partial_sum_equals_per_hospital_updates_and_failures_are_reported(tmp_path):
    config = with_absolute_paths(config_from_data(tiny_study(tmp_path)))
    hospitals, _ = prepare_hospitals(config)
    worker = HospitalWorker(config, hospitals, threads=1)
    torch.manual_seed(0)
    initial = {k: v.numpy() for k, v in build_model(config.model, len(config.data.organs)).state_dict().items()}
    ids = [h.hospital_id for h in hospitals]

    summed = worker.train_round(1, ids, encode_state(initial), slowdown={"b": 1e9}, deadline_s=1e6)
    worker.strategy.partial_aggregation = False  # as a method with non-linear aggregation would
    one_by_one = worker.train_round(1, [*ids, "no-such-hospital"], encode_state(initial))

    assert summed.results == () and summed.count == 2 and summed.account.late == ["b"]  # b: slowed past it
    assert len(one_by_one.results) == 3 and one_by_one.aggregate is None
    assert [hid for hid, _ in one_by_one.failed] == ["no-such-hospital"]  # reported for retry, not raised
    hierarchical, flat = RoundLedger(worker.strategy, initial), RoundLedger(worker.strategy, initial)
    hierarchical.merge(summed)
    for result in one_by_one.results:
        if result.hospital_id != "b":
            flat.add(result)
    new_h, new_f = hierarchical.new_global_state(), flat.new_global_state()
    assert all(np.array_equal(new_h[k], new_f[k]) for k in new_h)  # same RNG per (seed, round, hospital)
    assert not all(np.array_equal(new_h[k], initial[k]) for k in new_h)
    assert hierarchical.account.bytes_down == 3 * len(encode_state(initial))
    assert hierarchical.account.bytes_up == flat.account.bytes_up == 2 * len(encode_state(initial))
