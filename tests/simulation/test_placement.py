"""Hospitals are spread over actors by expected cost (local steps, then cases), largest first."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedray.config import config_from_data
from fedray.data.federation import Hospital
from fedray.data.sites import LabelMap, SiteCase
from fedray.simulation.placement import assign_hospitals


def hospitals(cases: list[int]) -> list[Hospital]:
    label_map = LabelMap(names=((1, "liver"),), values=(0, 1), organs=("liver",))
    case = SiteCase("s", Path("dataset.json"), "c", Path("c.nii.gz"), Path("c.nii.gz"), label_map)
    return [Hospital(f"h{i}", i, ("liver",), (case,) * n) for i, n in enumerate(cases)]


@pytest.mark.parametrize(
    ("cases", "actors", "expected"),
    [
        # equal local steps: 3 vs 2 hospitals per round; the big one's actor gets the fewer cases after it
        ([10, 1, 1, 1, 1], 2, [["h0", "h3"], ["h1", "h2", "h4"]]),
        ([3, 3, 2, 2, 2], 2, [["h0", "h2", "h4"], ["h1", "h3"]]),
        ([1, 1], 5, [["h0"], ["h1"]]),  # never more actors than hospitals
    ],
)
def test_largest_first_onto_least_loaded(cases, actors, expected):
    config = config_from_data(
        {"name": "p", "data": {"organs": ["liver"]}, "federation": {"hospitals": [{"organs": ["liver"]}]},
         "resources": {"actors": actors}}
    )
    plan = assign_hospitals(config, hospitals(cases), {"CPU": 8.0})
    assert [[h.hospital_id for h in group] for group in plan] == expected


def test_actors_that_do_not_fit_are_a_clear_error():
    from fedray.errors import FedrayError

    config = config_from_data(
        {"name": "p", "data": {"organs": ["liver"]}, "federation": {"hospitals": [{"organs": ["liver"]}]},
         "resources": {"actors": 3, "cpus_per_actor": 1}}
    )
    with pytest.raises(FedrayError, match="do not fit"):
        assign_hospitals(config, hospitals([1, 1, 1]), {"CPU": 2.0})
    gpu = config_from_data(
        {"name": "p", "data": {"organs": ["liver"]}, "federation": {"hospitals": [{"organs": ["liver"]}]},
         "resources": {"gpus_per_actor": 0.25}}
    )
    with pytest.raises(FedrayError, match="0 GPUs"):
        assign_hospitals(gpu, hospitals([1]), {"CPU": 2.0})
    assert len(assign_hospitals(gpu, hospitals([1] * 6), {"CPU": 8.0, "GPU": 1.0})) == 4  # 4 per GPU
