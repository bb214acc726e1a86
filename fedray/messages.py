"""What crosses the wire between launcher, driver and hospitals: weight payloads as bytes, and typed results."""

from __future__ import annotations

import functools
import io
import math
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from enum import StrEnum

from typing import TYPE_CHECKING, Any

import numpy as np

from fedray.npy import plain_layout

if TYPE_CHECKING:
    from fedray.data.federation import Hospital

State = dict[str, np.ndarray]


class Metric(StrEnum):
    """Metric names shared by MLflow, rounds.csv and summary.json."""

    DICE_MEAN = "dice/mean"  # pooled: from TP/FP/FN summed over the test volumes, mean over organs
    DICE_PER_VOLUME_MEAN = "dice_per_volume/mean"  # mean over organs of each organ's mean over volumes
    HD95_MISSED_TOTAL = "hd95_missed/total"  # (volume, organ) pairs in the reference and not predicted
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
    TRAIN_S = "time/train_s"  # first dispatch to new global weights (may overlap the previous round's recording)
    EVAL_S = "time/eval_s"  # evaluating the new global model on the test set (NaN when not evaluated)
    COMPUTE_MAX_S = "time/compute_max_s"
    COMPUTE_SUM_S = "time/compute_sum_s"


# Measured durations: they differ between otherwise identical runs, so exact comparisons skip them.
TIMING_METRICS = frozenset(
    {
        Metric.ROUND_S.value,
        Metric.TRAIN_S.value,
        Metric.EVAL_S.value,
        Metric.INFER_S_PER_VOLUME.value,
        Metric.COMPUTE_MAX_S.value,
        Metric.COMPUTE_SUM_S.value,
    }
)


def dice_metric(organ: str) -> str:
    """Metric name of one organ's Dice."""
    return f"dice/{organ}"


def hd95_metric(organ: str) -> str:
    """Metric name of one organ's HD95 in mm."""
    return f"hd95/{organ}"


def dice_per_volume_metric(organ: str) -> str:
    """Metric name of one organ's per-volume Dice (the mean over test volumes of each volume's Dice)."""
    return f"dice_per_volume/{organ}"


def hd95_missed_metric(organ: str) -> str:
    """Metric name of how many test volumes hold the organ in the reference but not in the prediction."""
    return f"hd95_missed/{organ}"


def summary_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The summary.json values a study also holds as run metrics (logged once at step 0; the others are
    its rounds' last values): what MLflow records and what a report read from study folders takes."""
    plateau = summary.get("rounds_to_plateau")  # None when never reached: NaN, so MLflow leaves it out
    return {
        **{k: float(summary[k]) for k in ("dice/mean_untrained", "params_total", "comm/bytes_preparation")},
        "plateaued": float(plateau is not None),
        "rounds_to_plateau": math.nan if plateau is None else float(plateau),
        "dice/mean_best": float(summary.get("dice/mean_best", math.nan)),
        "dice/mean_final": float(summary.get("dice/mean_final", math.nan)),
        "dice/mean_last_window": float(summary.get("dice/mean_last_window", math.nan)),
        "wall_s": float(summary.get("wall_s", math.nan)),  # the study's own time, every session summed
        # 1 or 0 as the run judged itself (its own plateau window); NaN from summaries written before
        "diverged": math.nan if summary.get("diverged") is None else float(summary["diverged"]),
    }


def encode_state(state: State) -> bytes:
    """Serialize a weight dict to the exact bytes that are sent (uncompressed .npz, no pickle)."""
    buffer = io.BytesIO()
    np.savez(buffer, **state)
    return buffer.getvalue()


def encoded_size(state: State) -> int:
    """len(encode_state(state)) without encoding it: an uncompressed .npz's size depends only on the
    names, dtypes and shapes of its arrays, so it is measured once per layout."""
    return _encoded_size(tuple((key, np.asarray(value).dtype.str, np.shape(value)) for key, value in state.items()))


@functools.lru_cache(maxsize=32)
def _encoded_size(layout: tuple[tuple[str, str, tuple[int, ...]], ...]) -> int:
    return len(encode_state({key: np.zeros(shape, dtype) for key, dtype, shape in layout}))


def decode_state(payload: bytes) -> State:
    """Inverse of encode_state; refuses pickled objects so a payload cannot run code."""
    state = _decode_plain(payload)
    if state is not None:
        return state
    with np.load(io.BytesIO(payload), allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def _decode_plain(payload: bytes) -> State | None:
    """The arrays of an uncompressed .npz of plain arrays (what encode_state writes), each copied straight
    out of the payload after its CRC is checked, as zipfile would; None when the payload is anything else
    (np.load then reads or refuses it).

    np.load reads each member through zipfile and numpy's .npy reader (its header with ast.literal_eval):
    1.6-3.3 ms for the scale workload's 0.5 MB of weights, decoded once per round by each hospital
    actor and, for each actor's partial sum, by the driver. The arrays are the same.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, ValueError):
        return None
    view = memoryview(payload)
    state: State = {}
    for member in members:
        if member.compress_type != zipfile.ZIP_STORED or member.flag_bits & 0x1 or not member.filename.endswith(".npy"):
            return None
        local = member.header_offset
        head = payload[local : local + 30]
        if len(head) < 30 or head[:4] != b"PK\x03\x04":
            return None
        name_length, extra_length = struct.unpack("<HH", head[26:30])
        start = local + 30 + name_length + extra_length
        end = start + member.compress_size
        if end > len(payload) or zlib.crc32(view[start:end]) != member.CRC:
            return None
        position = [start]

        def read(n: int, position: list[int] = position) -> bytes:
            chunk = payload[position[0] : min(position[0] + n, end)]
            position[0] += len(chunk)
            return chunk

        layout = plain_layout(read)
        if layout is None:
            return None
        shape, fortran, dtype, offset = layout
        count = math.prod(shape)
        if offset + count * dtype.itemsize != member.file_size:
            return None
        array = np.frombuffer(payload, dtype=dtype, count=count, offset=start + offset)
        state[member.filename[: -len(".npy")]] = array.reshape(shape, order="F" if fortran else "C").copy(order="K")
    return state


@dataclass(frozen=True)
class ClientResult:
    """One hospital's reply for one round.

    `train_seconds` is the bare local update (the shared loop only), the compute a deadline and the
    scale benchmark's floor are measured against. A `late` update missed the deadline: it is never
    aggregated and its upload does not count.
    """

    hospital_id: str
    round: int
    payload: bytes
    num_examples: int
    train_loss: float
    train_seconds: float
    bytes_down: int
    late: bool = False
    summed_bytes: int | None = None  # encoded size of an update kept in its actor's partial sum (payload empty)

    @property
    def bytes_up(self) -> int:
        """Exact size of what the hospital sent back."""
        return len(self.payload) if self.summed_bytes is None else self.summed_bytes


@dataclass(frozen=True)
class TrainTask:
    """One hospital's local training in one round: everything a hospital actor needs for it.

    `data` names the hospital's cases in the case store (data.case_store.StoredCase, a path each:
    no array travels); `global_payload` and `extras` are Ray object references (the round's encoded
    global weights, the method's broadcast): the actor fetches each only when it does not hold it
    yet, so a round's weights cross to an actor once. A method that needs more
    puts it in its broadcast or its client state, never in a new field.
    """

    round: int
    hospital: Hospital
    data: Any
    global_payload: Any
    extras: Any = None
    client_state: bytes | None = None  # the hospital's persistent state from its last round
    slowdown: float = 1.0  # a simulated straggler's factor on its measured time (deadline check)
    deadline_s: float | None = None


@dataclass(frozen=True)
class PrepareTask:
    """One job of a method's preparation phase (see Strategy.preparation) on the hospital's home actor."""

    job: Any  # strategies.base.PrepareJob
    data: Any  # the hospital's cases in the case store (data.case_store.StoredCase)


@dataclass(frozen=True)
class EvalTask:
    """Score the model of one evaluation on some fully-labelled volumes, on a hospital actor.

    `cases` are site cases (data.sites.SiteCase): the actor loads each once through load_cases and
    keeps it. The model is `weights` (a reference to the encoded global weights after round `round`,
    the same object the next round trains from, so they cross to an actor once) or, when the method
    judges another model (Strategy.evaluation_model), `judged`: a reference to that module. `key`
    names what is scored ("test", or a hospital's id for its local validation).
    """

    round: int
    key: str
    cases: tuple
    weights: Any = None
    judged: Any = None


@dataclass(frozen=True)
class EvalReport:
    """A hospital actor's reply to an EvalTask: one training.evaluate.CaseScore per case, in order."""

    key: str
    scores: tuple


@dataclass(frozen=True)
class TaskReport:
    """A hospital actor's reply to one task.

    `result` carries the update for methods aggregated one update at a time; for weighted-sum methods
    the update stays in the actor's partial sum and `result` is None. `failed` is the error of a
    training that raised (the driver retries it); `client_state` is what a stateful method keeps;
    `prepared` is a preparation job's result.
    """

    hospital_id: str
    result: ClientResult | None = None
    failed: str | None = None
    client_state: bytes | None = None
    prepared: bytes | None = None


@dataclass
class RoundAccount:
    """A round's per-hospital bookkeeping; accounts kept on different actors merge into one."""

    bytes_down: int = 0
    bytes_up: int = 0
    accepted: dict[str, tuple[float, int]] = field(default_factory=dict)  # hospital -> (loss, cases)
    compute_s: dict[str, float] = field(default_factory=dict)  # hospital -> bare local update seconds
    rejected: list[str] = field(default_factory=list)
    late: list[str] = field(default_factory=list)
    losses: dict[str, float] = field(default_factory=dict)  # hospital -> mean local loss (accepted or not)
    traffic: dict[str, tuple[int, int]] = field(default_factory=dict)  # hospital -> (bytes down, bytes up)

    def merge(self, other: RoundAccount) -> None:
        """Add `other`'s hospitals to this account."""
        self.bytes_down += other.bytes_down
        self.bytes_up += other.bytes_up
        self.accepted.update(other.accepted)
        self.compute_s.update(other.compute_s)
        self.rejected.extend(other.rejected)
        self.late.extend(other.late)
        self.losses.update(other.losses)
        self.traffic.update(other.traffic)


@dataclass(frozen=True)
class RoundPart:
    """One hospital actor's share of a round for methods whose aggregation is a weighted sum.

    `aggregate` is the float64 weighted sum of the updates the actor trained this round (encoded, or
    empty when it accepted none) and `account` their bookkeeping, so the driver holds one model per
    actor, not per hospital.
    """

    round: int
    account: RoundAccount
    aggregate: bytes = b""
    weight: float = 0.0
    count: int = 0


@dataclass
class Progress:
    """What the driver reports to the launcher while a study runs (the CLI shows it)."""

    phase: str = "starting"
    round: int = 0
    rounds: int = 0
    clients_done: int = 0
    clients: int = 0
    train_loss: float = math.nan
    dice_mean: float = math.nan
    elapsed_s: float = 0.0
    eta_s: float = math.nan
    run_id: str | None = None
    running: tuple[tuple[str, int, int], ...] = ()  # (hospital, steps done, local steps) of those still training
