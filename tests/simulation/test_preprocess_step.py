"""The preprocessing step: Ray tasks write every missing case into the store before round 1, and nothing else."""

from __future__ import annotations

import pytest

import fedray.data.case_store as case_store
from fedray.config import config_from_data, with_absolute_paths
from fedray.data.case_store import is_stored, store_root, stored_cases
from fedray.data.federation import prepare_hospitals
from fedray.errors import DataError
from fedray.simulation.preprocess import missing_cases, preprocess_cases
from tests.conftest import tiny_study

pytestmark = pytest.mark.ray


def test_ray_tasks_write_the_missing_cases_once_and_refuse_a_case_too_large(tmp_path, ray_local, monkeypatch):
    config = with_absolute_paths(config_from_data(tiny_study(tmp_path)))
    hospitals = prepare_hospitals(config).hospitals
    n_cases = sum(h.num_cases for h in hospitals)
    seen = []
    assert preprocess_cases(hospitals, config.data, lambda done, total: seen.append((done, total))) == n_cases
    assert seen[0] == (0, n_cases) and seen[-1] == (n_cases, n_cases)
    assert all(is_stored(ref) for h in hospitals for ref in stored_cases(h, config.data))
    assert sorted(p.name for p in store_root(config.data).iterdir()) == sorted(
        ref.folder.name for h in hospitals for ref in stored_cases(h, config.data)
    )  # no temporary folder left
    assert missing_cases(hospitals, config.data) == [] and preprocess_cases(hospitals, config.data) == 0

    bigger = with_absolute_paths(config_from_data(tiny_study(tmp_path, data={**tiny_study(tmp_path)["data"],
                                                                             "hu_window": [-200.0, 300.0]})))
    monkeypatch.setattr(case_store, "_available_memory", lambda: 10_000)  # checked here, before any task starts
    with pytest.raises(DataError, match="only 0.0 GiB of memory is available"):
        preprocess_cases(hospitals, bigger.data)
    assert len(missing_cases(hospitals, bigger.data)) == n_cases
