"""Aggregation maths against hand-computed values."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fedray.strategies.aggregate import WeightedSum, weighted_mean
from fedray.strategies.fedavg import FedAvg
from fedray.methods import FedAvgParams


def test_weighted_mean_by_hand():
    a = {"w": np.array([1.0, 2.0], dtype=np.float32), "b": np.array([0.0], dtype=np.float32)}
    b = {"w": np.array([4.0, 8.0], dtype=np.float32), "b": np.array([3.0], dtype=np.float32)}
    # weights 1 and 2: (a + 2b) / 3
    result = weighted_mean([a, b], [1, 2])
    np.testing.assert_array_equal(result["w"], np.array([3.0, 6.0], dtype=np.float32))
    np.testing.assert_array_equal(result["b"], np.array([2.0], dtype=np.float32))
    assert result["w"].dtype == np.float32


def test_streaming_sum_does_not_depend_on_arrival_order():
    rng = np.random.default_rng(0)
    states = [{"w": rng.normal(size=(50,)).astype(np.float32)} for _ in range(5)]
    weights = [3, 1, 4, 1, 5]
    results = []
    for order in itertools.permutations(range(5)):
        acc = WeightedSum()
        for i in order:
            acc.add(states[i], weights[i])
        results.append(acc.mean(states[0])["w"])
    for r in results[1:]:
        assert np.array_equal(r, results[0])


def test_weighted_sum_rejects_mismatched_keys_and_bad_weights():
    acc = WeightedSum()
    acc.add({"a": np.zeros(2, np.float32)}, 1)
    with pytest.raises(ValueError, match="keys"):
        acc.add({"b": np.zeros(2, np.float32)}, 1)
    with pytest.raises(ValueError, match="> 0"):
        acc.add({"a": np.zeros(2, np.float32)}, 0)


def test_fedavg_weights_by_cases_or_not():
    assert FedAvg(FedAvgParams(weighted=True)).client_weight(7) == 7.0
    assert FedAvg(FedAvgParams(weighted=False)).client_weight(7) == 1.0


def test_fedavg_server_update_is_the_weighted_mean():
    strategy = FedAvg(FedAvgParams())
    acc = strategy.new_aggregate()
    acc.add({"w": np.array([0.0], np.float32)}, strategy.client_weight(1))
    acc.add({"w": np.array([3.0], np.float32)}, strategy.client_weight(2))
    new = strategy.server_update({"w": np.array([100.0], np.float32)}, acc)
    assert new["w"][0] == pytest.approx(2.0)


def test_fedopt_sgd_lr1_equals_fedavg():
    from fedray.config import ServerOptimizerConfig

    rng = np.random.default_rng(1)
    global_state = {"w": rng.normal(size=(4, 3)).astype(np.float32), "n": np.array(2, dtype=np.int64)}
    updates = [{"w": rng.normal(size=(4, 3)).astype(np.float32), "n": np.array(2, dtype=np.int64)} for _ in range(3)]
    plain, fedopt = FedAvg(FedAvgParams()), FedAvg(FedAvgParams(), ServerOptimizerConfig(name="sgd", lr=1.0))
    results = []
    for strategy in (plain, fedopt):
        acc = strategy.new_aggregate()
        for i, u in enumerate(updates):
            acc.add(u, i + 1)
        results.append(strategy.server_update(global_state, acc))
    np.testing.assert_allclose(results[1]["w"], results[0]["w"], rtol=0, atol=1e-6)
    assert results[1]["n"] == 2


def test_fedavgm_momentum_by_hand():
    from fedray.config import ServerOptimizerConfig

    strategy = FedAvg(FedAvgParams(), ServerOptimizerConfig(name="sgd", lr=1.0, momentum=0.5))
    state = {"w": np.array([0.0], np.float32)}
    for expected in (1.0, 2.5):  # delta 1 each round: v1 = 1, v2 = 0.5*1 + 1 = 1.5
        acc = strategy.new_aggregate()
        acc.add({"w": state["w"] + 1.0}, 1)
        state = strategy.server_update(state, acc)
        assert state["w"][0] == pytest.approx(expected)


@pytest.mark.parametrize("name", ["adam", "yogi"])
def test_adaptive_server_optimisers_move_towards_the_mean(name):
    from fedray.config import ServerOptimizerConfig

    strategy = FedAvg(FedAvgParams(), ServerOptimizerConfig(name=name, lr=0.1))
    state = {"w": np.array([0.0, 0.0], np.float32)}
    acc = strategy.new_aggregate()
    acc.add({"w": np.array([1.0, -1.0], np.float32)}, 1)
    new = strategy.server_update(state, acc)
    assert new["w"][0] > 0 and new["w"][1] < 0
    assert abs(new["w"][0]) <= 0.1 + 1e-6  # adaptive steps are bounded by lr at the first step


# Reddi et al. (2021) Algorithm 2 by hand: x0 = 1, the mean is 0.8, so the pseudo-gradient is
# g = 0.2; lr 0.1, betas (0.9, 0.99), tau 1e-3. Round 1: m = 0.1 * 0.2 = 0.02 and v starts at
# tau^2 = 1e-6. Adam: v = 0.99e-6 + 0.01 * 0.04 = 4.0099e-4; Yogi: v = 1e-6 + 0.01 * 0.04 = 4.01e-4
# (v < g^2, so sign(v - g^2) = -1). Round 2 moves the mean to x1 - 0.1, so g = 0.1:
# m = 0.9 * 0.02 + 0.1 * 0.1 = 0.028; Adam v = 0.99 * 4.0099e-4 + 0.01 * 0.01 = 4.969801e-4;
# Yogi v = 4.01e-4 - 0.01 * 0.01 * sign(4.01e-4 - 0.01) = 5.01e-4. No bias correction anywhere.
@pytest.mark.parametrize(
    "name, v1, v2", [("adam", 4.0099e-4, 4.969801e-4), ("yogi", 4.01e-4, 5.01e-4)]
)
def test_fedadam_and_fedyogi_match_reddi_algorithm_2_by_hand(name, v1, v2):
    import math

    from fedray.config import ServerOptimizerConfig

    strategy = FedAvg(FedAvgParams(), ServerOptimizerConfig(name=name, lr=0.1, betas=(0.9, 0.99), eps=1e-3))
    state = {"w": np.array([1.0], np.float64)}
    x1 = 1.0 - 0.1 * 0.02 / (math.sqrt(v1) + 1e-3)
    x2 = x1 - 0.1 * 0.028 / (math.sqrt(v2) + 1e-3)
    for offset, expected in ((0.2, x1), (0.1, x2)):
        acc = strategy.new_aggregate()
        acc.add({"w": state["w"] - offset}, 1)
        state = strategy.server_update(state, acc)
        assert state["w"][0] == pytest.approx(expected, rel=1e-9)
    # torch's Adam (bias-corrected) would have stepped by about lr at round 1: x = 0.9.
    assert x1 == pytest.approx(0.90487, abs=1e-5)
