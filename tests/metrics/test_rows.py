"""A round's local validation fields: per hospital, pooled over its held-out cases, its organs only."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from fedray.metrics.rows import local_validation_fields


@dataclass(frozen=True)
class _Map:
    organs: tuple[str, ...]


@dataclass(frozen=True)
class _Case:
    label_map: _Map


@dataclass(frozen=True)
class _Hospital:
    hospital_id: str
    validation: tuple


@dataclass(frozen=True)
class _Score:
    counts: np.ndarray


def test_local_validation_scores_each_hospitals_own_organs_by_hand():
    organs = ["liver", "spleen"]
    a = _Hospital("a", (_Case(_Map(("liver",))), _Case(_Map(("liver",)))))
    b = _Hospital("b", (_Case(_Map(("liver", "spleen"))),))
    none = _Hospital("c", ())
    scores = {
        # a labels only the liver: its spleen counts (a "prediction" on unlabelled voxels) are not scored
        "a": [_Score(np.array([[3, 1, 0], [0, 9, 0]])), _Score(np.array([[1, 0, 3], [0, 9, 0]]))],
        "b": [_Score(np.array([[2, 0, 0], [1, 1, 0]]))],
    }
    fields = local_validation_fields(organs, [a, b, none], scores)
    assert fields["local_val/dice/a"] == pytest.approx(8 / 12)  # liver: 2*4 / (2*4 + 1 + 3)
    assert fields["local_val/dice/b"] == pytest.approx((1.0 + 2 / 3) / 2)
    # pooled: liver 2*6 / (2*6 + 1 + 3), spleen 2 / 3, then the mean over organs
    assert fields["local_val/pooled_dice"] == pytest.approx((12 / 16 + 2 / 3) / 2)
    assert "local_val/dice/c" not in fields
    idle = local_validation_fields(organs, [a, b, none], None)
    assert set(idle) == {"local_val/dice/a", "local_val/dice/b", "local_val/pooled_dice"}
    assert all(math.isnan(v) for v in idle.values())
    assert local_validation_fields(organs, [none], None) == {}
