"""Aggregation maths against hand-computed values."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fedray.strategies.aggregate import WeightedSum, weighted_mean
from fedray.strategies.fedavg import FedAvg, FedAvgParams


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
