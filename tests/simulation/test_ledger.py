"""The driver's per-round bookkeeping: bad updates are rejected and never reach the global model."""

from __future__ import annotations

import numpy as np
import pytest

from fedray.messages import ClientResult, encode_state
from fedray.simulation.ledger import RoundLedger, update_problem
from fedray.strategies.fedavg import FedAvg
from fedray.methods import FedAvgParams

GLOBAL = {"w": np.zeros((2, 2), np.float32), "b": np.zeros(2, np.float32)}


def result(hospital: str, state: dict, cases: int = 1, loss: float = 1.0) -> ClientResult:
    return ClientResult(hospital, 1, encode_state(state), cases, loss, 0.1, bytes_down=100)


@pytest.mark.parametrize(
    ("update", "reason"),
    [
        ({"w": np.full((2, 2), np.nan, np.float32), "b": np.zeros(2, np.float32)}, "NaN or inf"),
        ({"w": np.full((2, 2), np.inf, np.float32), "b": np.zeros(2, np.float32)}, "NaN or inf"),
        ({"w": np.zeros((2, 3), np.float32), "b": np.zeros(2, np.float32)}, "shape"),
        ({"w": np.zeros((2, 2), np.float32)}, "wrong keys"),
    ],
)
def test_bad_updates_are_named(update, reason):
    assert reason in update_problem(update, GLOBAL)


def test_a_nan_update_is_rejected_and_does_not_poison_the_model():
    ledger = RoundLedger(FedAvg(FedAvgParams()), GLOBAL)
    good = {"w": np.ones((2, 2), np.float32), "b": np.ones(2, np.float32)}
    bad = {"w": np.full((2, 2), np.nan, np.float32), "b": np.ones(2, np.float32)}
    ledger.add(result("good", good, cases=2, loss=0.5))
    ledger.add(result("bad", bad, cases=5, loss=float("nan")))
    new = ledger.new_global_state()
    assert ledger.rejected == ["bad"]
    np.testing.assert_array_equal(new["w"], good["w"])
    assert ledger.train_loss == 0.5  # only accepted updates
    assert ledger.account.bytes_up == 2 * len(encode_state(good)) and ledger.account.bytes_down == 200  # both sent


def test_all_rejected_keeps_the_global_model():
    ledger = RoundLedger(FedAvg(FedAvgParams()), GLOBAL)
    ledger.add(result("bad", {"w": np.zeros((2, 2), np.float32)}))
    assert ledger.new_global_state() is GLOBAL


def test_actor_partial_sums_merge_to_the_same_mean_as_one_ledger():
    """Hierarchical aggregation: two actors' partial sums give the driver exactly the flat weighted mean."""
    states = [{"w": np.full((2, 2), v, np.float32), "b": np.full(2, -v, np.float32)} for v in (1.0, 2.0, 4.0)]
    cases = [1, 2, 5]
    flat = RoundLedger(FedAvg(FedAvgParams()), GLOBAL)
    for i, (state, n) in enumerate(zip(states, cases)):
        flat.add(result(f"h{i}", state, cases=n, loss=float(i)))
    first, second = RoundLedger(FedAvg(FedAvgParams()), GLOBAL), RoundLedger(FedAvg(FedAvgParams()), GLOBAL)
    first.add(result("h0", states[0], cases=1, loss=0.0))
    for i in (1, 2):
        second.add(result(f"h{i}", states[i], cases=cases[i], loss=float(i)))
    driver = RoundLedger(FedAvg(FedAvgParams()), GLOBAL)
    driver.merge(first.part(1))
    driver.merge(second.part(1))
    expected = (1 * 1.0 + 2 * 2.0 + 5 * 4.0) / 8  # 3.125 by hand
    np.testing.assert_array_equal(driver.new_global_state()["w"], np.full((2, 2), expected, np.float32))
    np.testing.assert_array_equal(driver.new_global_state()["w"], flat.new_global_state()["w"])
    assert driver.account.bytes_up == flat.account.bytes_up and driver.account.bytes_down == 300
    assert driver.train_loss == flat.train_loss == (0 * 1 + 1 * 2 + 2 * 5) / 8


def test_late_updates_count_their_download_only():
    ledger = RoundLedger(FedAvg(FedAvgParams()), GLOBAL)
    late = ClientResult("slow", 1, encode_state(GLOBAL), 1, 0.3, 9.0, bytes_down=100, late=True)
    ledger.add(late)
    assert ledger.account.late == ["slow"] and ledger.account.bytes_up == 0 and ledger.account.bytes_down == 100
    assert ledger.account.compute_s == {"slow": 9.0} and ledger.new_global_state() is GLOBAL
