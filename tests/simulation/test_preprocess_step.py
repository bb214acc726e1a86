"""The preprocessing step: Ray actors write every missing case into the store before round 1, then go."""

from __future__ import annotations

import time

import psutil
import pytest

import fedray.data.case_store as case_store
from fedray.config import config_from_data, with_absolute_paths
from fedray.data.case_store import is_stored, store_root, stored_cases
from fedray.data.federation import prepare_hospitals
from fedray.errors import DataError
from fedray.simulation import preprocess
from fedray.simulation.preprocess import WORKER_BYTES, missing_cases, preprocess_cases, writers_at_once
from tests.conftest import tiny_study

pytestmark = pytest.mark.ray


def writer_processes() -> list[psutil.Process]:
    """This process's descendants that are (or were just) preprocessing actors."""
    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            if "CaseWriter" in " ".join(process.cmdline()) and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except psutil.Error:
            continue  # exited meanwhile
    return found


def test_ray_actors_write_the_missing_cases_once_then_go_and_refuse_a_case_too_large(tmp_path, ray_local, monkeypatch):
    config = with_absolute_paths(config_from_data(tiny_study(tmp_path)))
    hospitals = prepare_hospitals(config).hospitals
    n_cases = sum(h.num_cases for h in hospitals)
    seen, writers = [], []

    def progress(done: int, total: int) -> None:
        seen.append((done, total))
        writers.append(len(writer_processes()))

    assert preprocess_cases(hospitals, config.data, progress) == n_cases
    assert max(writers) >= 1  # the writers were this process's descendants, so their going is seen
    deadline = time.monotonic() + 30
    while writer_processes() and time.monotonic() < deadline:  # killed as their last case was written
        time.sleep(0.2)
    assert writer_processes() == []
    assert seen[0] == (0, n_cases) and seen[-1] == (n_cases, n_cases)
    assert all(is_stored(ref) for h in hospitals for ref in stored_cases(h, config.data))
    assert sorted(p.name for p in store_root(config.data).iterdir()) == sorted(
        ref.folder.name for h in hospitals for ref in stored_cases(h, config.data)
    )  # no temporary folder left
    assert missing_cases(hospitals, config.data) == [] and preprocess_cases(hospitals, config.data) == 0

    bigger = with_absolute_paths(config_from_data(tiny_study(tmp_path, data={**tiny_study(tmp_path)["data"],
                                                                             "hu_window": [-200.0, 300.0]})))
    monkeypatch.setattr(case_store, "available_memory", lambda: 10_000)  # checked here, before any task starts
    with pytest.raises(DataError, match="only 0.0 GiB of memory is available"):
        preprocess_cases(hospitals, bigger.data)
    assert len(missing_cases(hospitals, bigger.data)) == n_cases


def test_writers_at_once_are_the_cpus_or_fewer_to_fit_in_memory(tmp_path, ray_local, monkeypatch):
    gib = 2**30
    assert writers_at_once(cases=9, cpus=2, case_bytes=gib, available=16 * gib) == 2
    assert writers_at_once(cases=1, cpus=2, case_bytes=gib, available=16 * gib) == 1
    assert writers_at_once(cases=9, cpus=8, case_bytes=gib, available=3 * (gib + WORKER_BYTES)) == 3
    assert writers_at_once(cases=9, cpus=8, case_bytes=gib, available=gib) == 1  # always one (it fits: checked)

    config = with_absolute_paths(config_from_data(tiny_study(tmp_path)))
    hospitals = prepare_hospitals(config).hospitals
    asked = []

    def spy(cases, cpus, case_bytes, available):
        asked.append((cases, cpus, case_bytes))
        return writers_at_once(cases, cpus, case_bytes, available)

    monkeypatch.setattr(preprocess, "writers_at_once", spy)
    written = preprocess_cases(hospitals, config.data)
    [(cases, cpus, case_bytes)] = asked
    assert cases == written and 1 <= cpus <= 2 and case_bytes == 32**3 * (case_store.BYTES_PER_VOXEL
                                                                      + case_store.BYTES_PER_RESAMPLED_VOXEL)
