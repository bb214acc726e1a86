"""Checkpoints: the driver's whole state after a round, written atomically, read without unpickling."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedray.atomic import atomic_file
from fedray.messages import State
from fedray.tracking.callbacks import Callback, RunContext

_WEIGHT = "weights/"
_BLOB = "blob/"
_META = "meta.json"


@dataclass
class Checkpoint:
    """Everything needed to continue a study exactly where it stopped.

    Attributes:
        round: the last completed round.
        global_state: the global weights after that round.
        meta: JSON-safe values (MLflow run id, rounds.csv rows, counters, last evaluation).
        blobs: opaque byte strings (the method's state: server optimiser, preparation results).
    """

    round: int
    global_state: State
    meta: dict[str, Any] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)


def checkpoint_path(run_dir: Path, round_index: int | str | None = None) -> Path:
    """results/<run>/checkpoints/latest.npz, a kept round's round_NNNNNN.npz, or "best" (best.npz:
    the evaluated round with the highest dice/mean so far)."""
    if round_index is None or round_index == "best":
        name = f"{round_index or 'latest'}.npz"
    else:
        name = f"round_{int(round_index):06d}.npz"
    return run_dir / "checkpoints" / name


def save_checkpoint(checkpoint: Checkpoint, path: Path) -> None:
    """Write to a temporary file, fsync, then rename: a crash leaves the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"{_WEIGHT}{k}": v for k, v in checkpoint.global_state.items()}
    arrays.update({f"{_BLOB}{k}": np.frombuffer(v, dtype=np.uint8) for k, v in checkpoint.blobs.items()})
    meta = {**checkpoint.meta, "round": checkpoint.round}
    arrays[_META] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with atomic_file(path) as handle:
        np.savez(handle, **arrays)


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint; refuses pickled content (allow_pickle=False)."""
    with np.load(path, allow_pickle=False) as archive:
        meta = json.loads(archive[_META].tobytes().decode())
        weights = {k.removeprefix(_WEIGHT): archive[k] for k in archive.files if k.startswith(_WEIGHT)}
        blobs = {k.removeprefix(_BLOB): archive[k].tobytes() for k in archive.files if k.startswith(_BLOB)}
    return Checkpoint(round=meta.pop("round"), global_state=weights, meta=meta, blobs=blobs)


def torch_state_to_bytes(state: dict) -> bytes:
    """Serialize a torch state dict (tensors and numbers) for a checkpoint blob."""
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def torch_state_from_bytes(blob: bytes) -> dict:
    """Inverse of torch_state_to_bytes; weights_only=True, so no arbitrary object is unpickled."""
    import torch

    return torch.load(io.BytesIO(blob), weights_only=True)


class CheckpointCallback(Callback):
    """Writes the driver's state (`run.snapshot()`) at round 0, after each preparation job, every
    `tracking.checkpoint_every` rounds, at the last round and when the user stops the study, so a
    study killed at any moment resumes from its last checkpoint; every `tracking.keep_every` rounds a
    copy is also kept as round_NNNNNN.npz (for `fedray predict --round`). `on_saved(round, keep)` runs
    after each write, `keep` holding the best round if any (the driver prunes the client states that
    neither the checkpoint nor the best checkpoint needs)."""

    def __init__(self, on_saved: Callable[[int, tuple[int, ...]], None] | None = None) -> None:
        self.on_saved = on_saved

    def save(self, run: RunContext) -> None:
        checkpoint = run.snapshot()
        save_checkpoint(checkpoint, checkpoint_path(run.config.run_dir))
        keep = run.config.tracking.keep_every
        if keep and checkpoint.round and checkpoint.round % keep == 0:  # a round a user may predict with later
            save_checkpoint(checkpoint, checkpoint_path(run.config.run_dir, checkpoint.round))
        if self.on_saved is not None:
            best = best_round(run.rows)
            self.on_saved(checkpoint.round, () if best is None else (best,))

    def on_run_start(self, run: RunContext) -> None:
        if run.resumed is None:  # from here on `fedray resume` continues this MLflow run
            self.save(run)

    def on_prepared(self, run: RunContext) -> None:
        self.save(run)

    def on_round_end(self, run: RunContext, row: dict[str, Any]) -> None:
        cfg, round_index = run.config, row["round"]
        every, keep = cfg.tracking.checkpoint_every, cfg.tracking.keep_every
        if _is_best(run.rows):  # written first: a study killed now still has its best model
            save_checkpoint(run.snapshot(), checkpoint_path(cfg.run_dir, "best"))
        if (
            run.last_round
            or run.stopping
            or (every and round_index % every == 0)
            or (keep and round_index % keep == 0)
        ):
            self.save(run)


def best_round(rows: list[dict[str, Any]]) -> int | None:
    """The evaluated round with the highest dice/mean (the earliest of equals: best.npz's round), or None."""
    best: tuple[float, int] | None = None
    for row in rows:
        dice = row.get("dice/mean", math.nan)
        if not math.isnan(dice) and (best is None or dice > best[0]):
            best = (dice, row["round"])
    return None if best is None else best[1]


def _is_best(rows: list[dict[str, Any]]) -> bool:
    """True when the last row's dice/mean is finite and higher than every earlier evaluated round's."""
    return bool(rows) and best_round(rows) == rows[-1]["round"]
