"""What crosses the wire between driver and hospitals: weight payloads as bytes, and typed results."""

from __future__ import annotations

import io
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

State = dict[str, np.ndarray]


class Metric(StrEnum):
    """Metric names shared by MLflow, rounds.csv and summary.json."""

    DICE_MEAN = "dice/mean"
    INFER_S_PER_VOLUME = "infer/s_per_volume"
    BYTES_DOWN = "comm/bytes_down"
    BYTES_UP = "comm/bytes_up"
    BYTES_TOTAL = "comm/bytes_total"
    ROUND_S = "time/round_s"
    TRAIN_LOSS = "train/loss"
    REJECTED = "fault/rejected"
    RETRIES = "fault/retries"
    DROPPED = "fault/dropped"
    DROPOUT = "fault/dropout"
    LATE = "fault/late"


def dice_metric(organ: str) -> str:
    """Metric name of one organ's Dice."""
    return f"dice/{organ}"


def hd95_metric(organ: str) -> str:
    """Metric name of one organ's HD95 in mm."""
    return f"hd95/{organ}"


def encode_state(state: State) -> bytes:
    """Serialize a weight dict to the exact bytes that are sent (uncompressed .npz, no pickle)."""
    buffer = io.BytesIO()
    np.savez(buffer, **state)
    return buffer.getvalue()


def decode_state(payload: bytes) -> State:
    """Inverse of encode_state; refuses pickled objects so a payload cannot run code."""
    with np.load(io.BytesIO(payload), allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


@dataclass(frozen=True)
class ClientResult:
    """One hospital's reply for one round."""

    hospital_id: str
    round: int
    payload: bytes
    num_examples: int
    train_loss: float
    train_seconds: float
    bytes_down: int

    @property
    def bytes_up(self) -> int:
        """Exact size of what the hospital sent back."""
        return len(self.payload)
