"""Aggregation maths as pure functions over weight dicts (numpy), streaming so updates never pile up."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from fedray.messages import State


class WeightedSum:
    """Running sum of weighted states: fold updates in as they arrive, keep one model in memory.

    Sums are kept in float64. A product of a float32 value and a small integer weight is exact in
    float64, and so is their sum while one parameter's values across hospitals stay within about
    2**(53 - 24 - log2(weight * hospitals)) of each other in magnitude; beyond that the last bits can
    depend on arrival order. The float32 cast at the end hides such differences almost always (tests
    check bit-identical weights across actor counts), but it is not a guarantee.
    """

    def __init__(self) -> None:
        self.total: State | None = None
        self.weight = 0.0
        self.count = 0

    def add(self, state: State, weight: float) -> None:
        """Fold in `state` with `weight` (> 0)."""
        if weight <= 0:
            raise ValueError(f"aggregation weight must be > 0, got {weight}")
        if self.total is None:
            self.total = {k: v.astype(np.float64) * weight for k, v in state.items()}
        else:
            if state.keys() != self.total.keys():
                raise ValueError("update keys differ from the first update's keys")
            for key, value in state.items():
                self.total[key] += value.astype(np.float64) * weight
        self.weight += weight
        self.count += 1

    def merge(self, total: State, weight: float, count: int) -> None:
        """Fold in another accumulator's float64 `total` (a hospital actor's partial sum)."""
        if self.total is None:
            self.total = {k: np.array(v, dtype=np.float64) for k, v in total.items()}
        else:
            if total.keys() != self.total.keys():
                raise ValueError("partial aggregate keys differ from the first update's keys")
            for key, value in total.items():
                self.total[key] += value
        self.weight += weight
        self.count += count

    def mean(self, like: State) -> State:
        """Weighted mean, cast to the dtypes of `like` (the current global state)."""
        if self.total is None:
            raise ValueError("no update was aggregated")
        return {k: (v / self.weight).astype(like[k].dtype) for k, v in self.total.items()}


def weighted_mean(states: Iterable[State], weights: Iterable[float]) -> State:
    """sum_i w_i * s_i / sum_i w_i for a list of states (the dtypes of the first state)."""
    states = list(states)
    acc = WeightedSum()
    for state, weight in zip(states, weights, strict=True):
        acc.add(state, weight)
    return acc.mean(states[0])

