"""Hospitals are spread over actors by expected cost (local steps, then cases), largest first."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedray.config import config_from_data
from fedray.data.federation import Hospital
from fedray.data.sites import LabelMap, SiteCase
from fedray.simulation.placement import plan_actors


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
    plan = plan_actors(config, hospitals(cases), {"CPU": 8.0})
    assert [[h.hospital_id for h in actor.hospitals] for actor in plan] == expected


def test_actors_that_do_not_fit_are_a_clear_error():
    from fedray.errors import FedrayError

    config = config_from_data(
        {"name": "p", "data": {"organs": ["liver"]}, "federation": {"hospitals": [{"organs": ["liver"]}]},
         "resources": {"actors": 3, "cpus_per_actor": 1}}
    )
    with pytest.raises(FedrayError, match="do not fit"):
        plan_actors(config, hospitals([1, 1, 1]), {"CPU": 2.0})
    gpu = config_from_data(
        {"name": "p", "data": {"organs": ["liver"]}, "federation": {"hospitals": [{"organs": ["liver"]}]},
         "resources": {"gpus_per_actor": 0.25}}
    )
    with pytest.raises(FedrayError, match="0 GPUs"):
        plan_actors(gpu, hospitals([1]), {"CPU": 2.0})
    assert len(plan_actors(gpu, hospitals([1] * 6), {"CPU": 8.0, "GPU": 1.0})) == 4  # 4 per GPU


def test_a_hospital_override_gets_an_actor_of_its_own_and_the_rest_share():
    config = config_from_data(
        {"name": "p", "data": {"organs": ["liver"]}, "federation": {"hospitals": [{"organs": ["liver"]}]},
         "resources": {"cpus_per_actor": 1, "gpus_per_actor": 0.25, "hospitals": {"h0": {"cpus": 2, "gpus": 1}}}}
    )
    plan = plan_actors(config, hospitals([50, 1, 1, 1]), {"CPU": 8.0, "GPU": 2.0})
    assert [([h.hospital_id for h in a.hospitals], a.cpus, a.gpus) for a in plan] == [
        (["h1"], 1.0, 0.25), (["h2"], 1.0, 0.25), (["h3"], 1.0, 0.25), (["h0"], 2.0, 1.0)
    ]
    assert plan[-1].bundle() == {"CPU": 2.0, "GPU": 1.0} and plan[0].bundle() == {"CPU": 1.0, "GPU": 0.25}
    # the whole GPU taken by h0 leaves 1 GPU = 4 quarter-GPU actors, and 6 CPUs
    assert len(plan_actors(config, hospitals([50] + [1] * 9), {"CPU": 8.0, "GPU": 2.0})) == 5


def test_an_override_for_an_unknown_hospital_is_a_did_you_mean_error():
    from fedray.errors import ConfigError
    from fedray.simulation.placement import check_resource_overrides

    config = config_from_data(
        {"name": "p", "data": {"organs": ["liver"]}, "federation": {"hospitals": [{"organs": ["liver"]}]},
         "resources": {"hospitals": {"h01": {"gpus": 1}}}}
    )
    with pytest.raises(ConfigError, match="no hospital is named 'h01'. Did you mean 'h1'"):
        check_resource_overrides(config, hospitals([1, 1]))
