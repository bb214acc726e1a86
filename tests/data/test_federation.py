"""Hospitals from the config: explicit lists, rules that scale, and organs no hospital labels."""

from __future__ import annotations

import pytest

from fedray.config import config_from_data
from fedray.data.federation import plan_hospitals, prepare_hospitals
from fedray.errors import ConfigError
from fedray.organs import ORGANS


def test_rule_scales_and_covers_every_organ():
    config = config_from_data(
        {"name": "r", "federation": {"rule": {"count": 300, "organs_per_hospital": 2, "cases": 3}}}
    )
    plans = plan_hospitals(config)
    assert len(plans) == 300 and len({p.name for p in plans}) == 300
    assert plans[0].organs == ("liver", "spleen") and plans[1].organs == ("kidney_left", "kidney_right")
    assert plans[3].organs == ("gallbladder", "liver")  # wraps around cyclically
    assert {o for p in plans for o in p.organs} == set(ORGANS)
    assert all(p.cases == 3 for p in plans)


def test_explicit_hospitals_keep_their_names():
    config = config_from_data(
        {"name": "e", "data": {"organs": ["liver"]}, "federation": {"hospitals": [{"name": "x", "organs": ["liver"], "cases": 2}, {"organs": ["liver"]}]}}
    )
    assert [(p.name, p.cases) for p in plan_hospitals(config)] == [("x", 2), ("hospital_001", 4)]


def test_study_organ_that_no_hospital_labels_is_an_error(tmp_path):
    config = config_from_data(
        {
            "name": "m",
            "data": {
                "cache_dir": str(tmp_path),
                "organs": ["liver", "spleen"],
                "phantom": {"shape": [16, 16, 16], "test_cases": 1},
                "patch_size": [16, 16, 16],
            },
            "federation": {"hospitals": [{"organs": ["liver"], "cases": 1}]},
            "eval": {"roi_size": [16, 16, 16]},
        }
    )
    with pytest.raises(ConfigError, match="No hospital labels spleen"):
        prepare_hospitals(config)


def test_phantom_cache_is_keyed_by_the_generator_version(tmp_path, monkeypatch):
    import fedray.data.phantom as phantom
    from fedray.config import config_from_data
    from fedray.data.federation import held_out_folder

    config = config_from_data({"name": "t", "data": {"cache_dir": str(tmp_path)},
                               "federation": {"hospitals": [{"organs": ["liver"]}]}})
    before = held_out_folder(config)
    monkeypatch.setattr(phantom, "GENERATOR_VERSION", phantom.GENERATOR_VERSION + 1)
    assert held_out_folder(config) != before  # an older generator's files are never reused


def test_local_validation_holds_out_each_hospitals_last_cases(tmp_path):
    from fedray.data.federation import check_layout

    study = {
        "name": "v",
        "data": {"cache_dir": str(tmp_path), "organs": ["liver", "spleen"],
                 "phantom": {"shape": [16, 16, 16], "test_cases": 1}, "patch_size": [16, 16, 16]},
        "federation": {"hospitals": [{"name": "x", "organs": ["liver"], "cases": 3},
                                     {"name": "y", "organs": ["spleen"], "cases": 2}], "local_validation": 1},
        "eval": {"roi_size": [16, 16, 16]},
    }
    hospitals = prepare_hospitals(config_from_data(study)).hospitals
    plain = prepare_hospitals(config_from_data({**study, "federation": {**study["federation"], "local_validation": 0}}))
    for held, whole in zip(hospitals, plain.hospitals):
        assert held.cases + held.validation == whole.cases and len(held.validation) == 1
    assert hospitals[0].record()["validation"] == [plain.hospitals[0].cases[-1].case_id]
    too_many = config_from_data({**study, "federation": {**study["federation"], "local_validation": 2}})
    with pytest.raises(ConfigError, match=r"local_validation: 2 .* y \(2\)"):
        check_layout(too_many)
    with pytest.raises(ConfigError, match="local_validation must be >= 0"):
        config_from_data({**study, "federation": {**study["federation"], "local_validation": -1}})
