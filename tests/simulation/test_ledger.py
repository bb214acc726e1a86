"""The driver's per-round bookkeeping: bad updates are rejected and never reach the global model."""

from __future__ import annotations

import numpy as np
import pytest

from fedray.messages import ClientResult, encode_state
from fedray.simulation.ledger import RoundLedger, update_problem
from fedray.strategies.fedavg import FedAvg, FedAvgParams

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
    assert ledger.bytes_up == 2 * len(encode_state(good)) and ledger.bytes_down == 200  # both were sent


def test_all_rejected_keeps_the_global_model():
    ledger = RoundLedger(FedAvg(FedAvgParams()), GLOBAL)
    ledger.add(result("bad", {"w": np.zeros((2, 2), np.float32)}))
    assert ledger.new_global_state() is GLOBAL
