"""Atomic writes: new content appears whole; a failed write leaves the old file, no temporary."""

from __future__ import annotations

import numpy as np
import pytest

from fedray.atomic import atomic_file, atomic_write_bytes, atomic_write_text


def test_writes_replace_the_file(tmp_path):
    path = tmp_path / "a.json"
    atomic_write_text(path, "old")
    atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "a.npz"
    atomic_write_bytes(path, b"old")
    with pytest.raises(RuntimeError), atomic_file(path) as handle:
        handle.write(b"half")
        raise RuntimeError("disk full")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.npz"]


def test_atomic_file_takes_numpy_archives(tmp_path):
    path = tmp_path / "arrays.npz"
    with atomic_file(path) as handle:
        np.savez(handle, x=np.arange(3))
    with np.load(path) as archive:
        assert archive["x"].tolist() == [0, 1, 2]
