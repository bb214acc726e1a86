"""The plain .npy header reader against numpy's own, for every layout np.save writes."""

from __future__ import annotations

import io

import numpy as np
import pytest

from fedray.npy import plain_layout


@pytest.mark.parametrize(
    "array",
    [np.zeros(()), np.zeros((0,)), np.zeros((7,), np.uint8), np.zeros((3, 4), ">i2"), np.zeros((2, 3), bool),
     np.zeros((1, 2, 3), np.float32), np.asfortranarray(np.zeros((3, 4, 5), np.float32)),
     np.zeros((2,), np.complex64), np.zeros((2,), [("a", "<f4")]), np.zeros((2,), "U3")],
    ids=["0-d", "empty", "uint8", "big-endian", "bool", "3-d", "fortran", "complex", "structured", "unicode"],
)
def test_a_plain_header_reads_as_numpy_reads_it_and_any_other_is_left_to_numpy(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    raw = buffer.getvalue()
    layout = plain_layout(io.BytesIO(raw).read)
    reference = io.BytesIO(raw)
    np.lib.format.read_magic(reference)
    shape, fortran, dtype = np.lib.format.read_array_header_1_0(reference)
    plain = array.dtype.kind in "biuf" and array.dtype.names is None
    assert (layout is not None) == plain, array.dtype
    if plain:
        assert layout == (shape, fortran, dtype, reference.tell())


def test_a_truncated_or_foreign_file_is_left_to_numpy():
    assert plain_layout(io.BytesIO(b"\x93NUMPY").read) is None
    assert plain_layout(io.BytesIO(b"PK\x03\x04" + b"\0" * 20).read) is None
