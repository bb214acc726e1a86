"""A hospital's training arrays: kept in one file per hospital, exactly as preprocessed, redone when an input changes."""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import pytest

import fedray.data.datasets as datasets
from fedray.config import config_from_data, with_absolute_paths
from fedray.data.datasets import load_hospital_cases, load_training_arrays, persistent_cache_dir, training_arrays
from fedray.data.federation import prepare_hospitals
from tests.conftest import tiny_study


def _same(left: list[dict], right: list[dict]) -> bool:
    return len(left) == len(right) and all(
        a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a)
        for a, b in zip(left, right)
    )


def test_arrays_are_read_back_from_one_file_per_hospital_and_redone_when_a_file_changes(tmp_path, monkeypatch):
    config = with_absolute_paths(config_from_data(tiny_study(tmp_path)))
    hospital = prepare_hospitals(config).hospitals[0]
    preprocessed = training_arrays(load_hospital_cases(hospital, config.data))

    written = load_training_arrays(hospital, config.data)
    [cached] = (persistent_cache_dir(config.data) / "arrays").glob("*.npz")
    assert _same(written, preprocessed)

    def no_preprocessing(*args, **kwargs):
        raise AssertionError("preprocessed again")

    monkeypatch.setattr(datasets, "load_hospital_cases", no_preprocessing)
    assert _same(load_training_arrays(hospital, config.data), preprocessed)  # from the file alone

    image = hospital.cases[0].image
    os.utime(image, ns=(os.stat(image).st_atime_ns, os.stat(image).st_mtime_ns + 10**9))  # the file was edited
    with pytest.raises(AssertionError, match="preprocessed again"):
        load_training_arrays(hospital, config.data)
    window = replace(config.data, hu_window=(-100.0, 200.0))  # other preprocessing, other arrays
    with pytest.raises(AssertionError, match="preprocessed again"):
        load_training_arrays(hospital, window)
    assert cached.exists()


def test_without_the_persistent_cache_nothing_is_written(tmp_path):
    config = with_absolute_paths(config_from_data(tiny_study(tmp_path)))
    data = replace(config.data, persistent_cache=False)
    hospital = prepare_hospitals(config).hospitals[0]
    arrays = load_training_arrays(hospital, data)
    assert _same(arrays, training_arrays(load_hospital_cases(hospital, data)))
    assert not (persistent_cache_dir(config.data) / "arrays").exists()
