"""Hospitals are spread over actors by expected cost, largest first."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedray.config import config_from_data
from fedray.data.federation import Hospital
from fedray.simulation.placement import assign_hospitals


def hospitals(cases: list[int]) -> list[Hospital]:
    return [Hospital(f"h{i}", i, ("liver",), (Path("."),), n) for i, n in enumerate(cases)]


@pytest.mark.parametrize(
    ("cases", "actors", "expected"),
    [
        ([10, 1, 1, 1, 1], 2, [["h0"], ["h1", "h2", "h3", "h4"]]),  # the big one gets an actor alone
        ([3, 3, 2, 2, 2], 2, [["h0", "h2", "h4"], ["h1", "h3"]]),  # 7 vs 5 cases
        ([1, 1], 5, [["h0"], ["h1"]]),  # never more actors than hospitals
    ],
)
def test_largest_first_onto_least_loaded(cases, actors, expected):
    config = config_from_data(
        {"name": "p", "data": {"organs": ["liver"]}, "federation": {"hospitals": [{"organs": ["liver"]}]},
         "resources": {"actors": actors}}
    )
    plan = assign_hospitals(config, hospitals(cases))
    assert [[h.hospital_id for h in group] for group in plan] == expected
