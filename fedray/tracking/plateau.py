"""The plateau rule: when a run's mean Dice stopped improving, from its evaluated round rows."""

from __future__ import annotations

import math
from collections.abc import Sequence


def rounds_to_plateau(
    rounds: Sequence[int], dice: Sequence[float], window: int, tolerance: float
) -> int | None:
    """The first evaluated round r at which the run has plateaued, or None if it never did.

    A run has plateaued at r when the evaluations in the last `window` rounds (r - window, r]
    reach less than `tolerance` above the best evaluation up to round r - window: the last
    `window` rounds brought less than `tolerance` (0.01 = 1 Dice point) of improvement. Rounds
    without an evaluation (NaN Dice) are skipped, so the rule works at any `eval.every` below
    `window`; a run shorter than `window` rounds past its first evaluation cannot have plateaued.

    Args:
        rounds: round numbers, ascending.
        dice: mean Dice (fraction) of each round; NaN where the round was not evaluated.
        window: rounds the improvement is measured over.
        tolerance: the improvement below which the run counts as flat.
    """
    evaluated = [(r, d) for r, d in zip(rounds, dice) if not math.isnan(d)]
    for r, _ in evaluated:
        before = [d for q, d in evaluated if q <= r - window]
        recent = [d for q, d in evaluated if r - window < q <= r]
        if before and recent and max(recent) < max(before) + tolerance:
            return r
    return None


def last_window_mean(rounds: Sequence[int], dice: Sequence[float], window: int) -> float:
    """The mean of the evaluations in the run's last `window` rounds (last round - window, last round]:
    the level a run sits at, less noisy than its final evaluation where the curve swings (a constant
    learning rate); NaN if nothing was evaluated."""
    evaluated = [(r, d) for r, d in zip(rounds, dice) if not math.isnan(d)]
    if not evaluated:
        return math.nan
    last = max(r for r, _ in evaluated)
    recent = [d for r, d in evaluated if r > last - window]
    return sum(recent) / len(recent)


def plateau_fields(rows: Sequence[dict], window: int, tolerance: float) -> dict:
    """summary.json fields: rounds_to_plateau (None if not reached), plateaued, final mean Dice and
    the mean over the last `window` rounds' evaluations."""
    rounds = [row["round"] for row in rows]
    dice = [row["dice/mean"] for row in rows]
    reached = rounds_to_plateau(rounds, dice, window, tolerance)
    evaluated = [d for d in dice if not math.isnan(d)]
    return {
        "rounds_to_plateau": reached,
        "plateaued": reached is not None,
        "plateau_rule": f"best mean Dice of the last {window} rounds < {tolerance:g} above the best before",
        "dice/mean_final": evaluated[-1] if evaluated else math.nan,
        "dice/mean_last_window": last_window_mean(rounds, dice, window),
    }
