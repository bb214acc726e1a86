"""Checkpoint paths and the best-round rule."""

from __future__ import annotations

import math
from pathlib import Path

from fedray.tracking.checkpoint import _is_best, best_round, checkpoint_path


def test_best_is_the_first_strictly_highest_evaluated_round():
    dice = [math.nan, 0.4, math.nan, 0.4, 0.5]
    rows = [{"round": i + 1, "dice/mean": d} for i, d in enumerate(dice)]
    assert [_is_best(rows[: i + 1]) for i in range(len(rows))] == [False, True, False, False, True]
    assert [best_round(rows[: i + 1]) for i in range(len(rows))] == [None, 2, 2, 2, 5]


def test_checkpoint_paths():
    run = Path("results/r")
    assert checkpoint_path(run) == run / "checkpoints" / "latest.npz"
    assert checkpoint_path(run, 7) == run / "checkpoints" / "round_000007.npz"
    assert checkpoint_path(run, "best") == run / "checkpoints" / "best.npz"
