"""Weight payloads: exact round trip, exact byte counts, no pickle."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest

from fedray.messages import ClientResult, decode_state, encode_state, encoded_size


def test_round_trip_is_exact():
    state = {"a.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.array(3, dtype=np.int64)}
    back = decode_state(encode_state(state))
    assert back.keys() == state.keys()
    for k in state:
        assert back[k].dtype == state[k].dtype and np.array_equal(back[k], state[k])


def test_byte_count_is_the_payload_length_and_grows_with_the_model():
    small = encode_state({"w": np.zeros(10, np.float32)})
    large = encode_state({"w": np.zeros(1010, np.float32)})
    assert len(large) - len(small) == 1000 * 4  # header identical, data exactly 4 B per float
    result = ClientResult("h", 1, large, 1, 0.0, 0.0, bytes_down=len(small))
    assert result.bytes_up == len(large)


def test_pickled_payload_is_refused():
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    with pytest.raises((ValueError, pickle.UnpicklingError)):
        decode_state(buffer.getvalue())


def test_encoded_size_is_the_payload_length_without_encoding():
    rng = np.random.default_rng(0)
    layouts = [
        {"w": rng.normal(size=(3, 4)).astype(np.float32), "b": rng.normal(size=3).astype(np.float32)},
        {"conv.weight": rng.normal(size=(8, 1, 3, 3, 3)), "steps": np.array(7, dtype=np.int64)},
        {"x" * 200: np.zeros(0, np.float16), "y": np.ones((2, 1, 5), np.uint8)},
    ]
    for state in layouts:
        assert encoded_size(state) == len(encode_state(state))
        other_values = {k: (rng.normal(size=v.shape) * 1e6).astype(v.dtype) for k, v in state.items()}
        assert encoded_size(other_values) == len(encode_state(other_values))


def _np_load(payload: bytes) -> dict:
    with np.load(io.BytesIO(payload), allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def test_decode_reads_what_np_load_reads_and_leaves_any_other_payload_to_it():
    state = {
        "w": np.arange(24, dtype=np.float32).reshape(2, 3, 4), "f": np.asfortranarray(np.ones((3, 2))),
        "b": np.zeros((5,), ">i2"), "s": np.float64(1.5), "e": np.zeros((0, 3), np.uint8), "c": np.ones(2, np.complex64),
    }
    payload = encode_state(state)
    decoded, expected = decode_state(payload), _np_load(payload)
    assert list(decoded) == list(expected) == list(state)
    for key, value in expected.items():
        mine = decoded[key]
        assert mine.dtype == value.dtype and mine.shape == value.shape and np.array_equal(mine, value)
        assert mine.flags.writeable and mine.flags.f_contiguous == value.flags.f_contiguous
        mine[...] = 0  # an array of its own, not a view of the payload
    assert np.array_equal(decode_state(payload)["w"], state["w"])
    compressed = io.BytesIO()
    np.savez_compressed(compressed, **state)  # not what encode_state writes: np.load reads it
    assert all(np.array_equal(decode_state(compressed.getvalue())[k], v) for k, v in state.items())
    assert decode_state(encode_state({})) == {}
    corrupt = bytearray(payload)
    corrupt[payload.index(state["w"].tobytes()) + 5] ^= 0xFF  # a flipped data byte: zipfile's CRC check refuses it
    with pytest.raises(Exception, match="CRC"):
        decode_state(bytes(corrupt))
