"""The .npy header np.save writes for an array of a plain number type, read without numpy's parser.

numpy reads every .npy header with ast.literal_eval (about 35-60 us a header): a task opens 12 case
files and a round's weights hold 20 arrays. np.save writes a plain array's header as, e.g.,
{'descr': '<f4', 'fortran_order': False, 'shape': (32, 64, 64), } padded with spaces to a newline
(format version 1.0); `plain_layout` reads exactly that form and returns None for any other, which
the caller then hands to numpy's own reader.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

_MAGIC = b"\x93NUMPY\x01\x00"  # format version 1.0
_PLAIN_HEADER = re.compile(
    r"\{'descr': '([<>|][biuf][1248])', 'fortran_order': (True|False), 'shape': \(((?:\d+, )*\d*,?)\), \} *\n"
)


def plain_layout(read: Callable[[int], bytes]) -> tuple[tuple[int, ...], bool, np.dtype, int] | None:
    """(shape, fortran order, dtype, data offset) of the .npy whose bytes `read(n)` returns in turn from
    its start, when its header is a plain array's (above); None otherwise (numpy's reader decides)."""
    start = read(10)
    if len(start) < 10 or start[:8] != _MAGIC:
        return None
    length = int.from_bytes(start[8:10], "little")
    match = _PLAIN_HEADER.fullmatch(read(length).decode("latin1"))
    if match is None:
        return None
    shape = tuple(int(n) for n in match[3].split(",") if n.strip())
    return shape, match[2] == "True", np.dtype(match[1]), 10 + length
