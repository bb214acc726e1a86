"""The plateau rule: when a run's mean Dice stopped improving, from its evaluated round rows; and whether it diverged."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def _evaluated(rounds: Sequence[int], dice: Sequence[float]) -> list[tuple[int, float]]:
    """(round, Dice) of the evaluated rounds (NaN Dice: not evaluated)."""
    return [(r, d) for r, d in zip(rounds, dice) if not math.isnan(d)]


def rounds_to_plateau(
    rounds: Sequence[int], dice: Sequence[float], window: int, tolerance: float, min_rounds: int = 0
) -> int | None:
    """The first evaluated round r at which the run has plateaued, or None if it never did.

    A run has plateaued at r when the median of its evaluations in the last `window` rounds
    (r - window, r] is less than `tolerance` (0.01 = 1 Dice point) above the median of its
    evaluations in the `window` rounds before them (r - 2 window, r - window]: its level rose by
    less than a point over the window. Windows, not single evaluations, because at a constant
    learning rate a curve swings by several points between evaluations; medians, not means, because
    one collapsed evaluation (a run at 69 % reading 7 % once) pulled a window's mean down by ten
    points and stopped a rising run, where a window's median moves by at most one neighbouring
    evaluation (with three or more evaluations a window: at `eval.every` 5 and a window of 30 there
    are six; with one or two a median is their mean). Rounds without an evaluation (NaN Dice) are skipped, so the rule works at any
    `eval.every` below `window`; a run shorter than 2 `window` rounds, or than `min_rounds`, cannot
    have plateaued. `min_rounds` is for curves that sit flat for a while before they rise (multi-head
    FedAvg at seed 1 read 8-18 % from round 50 to 90 while its training loss still fell, then rose;
    seed 0 rose from round 60): a flat stretch that early is not the level the run ends at.

    Args:
        rounds: round numbers, ascending.
        dice: mean Dice (fraction) of each round; NaN where the round was not evaluated.
        window: rounds each of the two compared medians spans.
        tolerance: the rise below which the run counts as flat.
        min_rounds: the first round at which the rule may be met.
    """
    evaluated = _evaluated(rounds, dice)
    for r, _ in evaluated:
        if r < max(2 * window, min_rounds):
            continue
        before = [d for q, d in evaluated if r - 2 * window < q <= r - window]
        recent = [d for q, d in evaluated if r - window < q <= r]
        if before and recent and statistics.median(recent) < statistics.median(before) + tolerance:
            return r
    return None


def last_window_median(rounds: Sequence[int], dice: Sequence[float], window: int) -> float:
    """The median of the evaluations in the run's last `window` rounds (last round - window, last
    round]: the level a run sits at, steadier than its final evaluation where the curve swings (a
    constant learning rate) and, as in the plateau rule, not pulled by one collapsed evaluation; NaN
    if nothing was evaluated."""
    evaluated = _evaluated(rounds, dice)
    if not evaluated:
        return math.nan
    last = max(r for r, _ in evaluated)
    return statistics.median(d for r, d in evaluated if r > last - window)


def rounds_to_level(rounds: Sequence[int], dice: Sequence[float], window: int, level: float) -> int | None:
    """The first evaluated round r at which the median of the run's evaluations in (r - window, r],
    at least three of them, reaches `level` (a fraction), or None if it never does: how fast a run
    gets somewhere, by the plateau rule's window, so one lucky evaluation does not count as arriving.
    On a steadily rising curve the median lags the curve by about half a window."""
    evaluated = _evaluated(rounds, dice)
    for r, _ in evaluated:
        recent = [d for q, d in evaluated if r - window < q <= r]
        if len(recent) >= 3 and statistics.median(recent) >= level:
            return r
    return None


DIVERGENCE_START = 5  # the first rounds, whose training loss is the level a run starts from


def training_diverged(losses: Sequence[float], window: int, start: int = DIVERGENCE_START) -> bool:
    """True where a run's training loss ended above where it started: the median over its last
    `window` rounds above the median over its first `start` (NaN, not trained, skipped; False for a
    run shorter than both). Such a run meets the plateau rule at a level that says nothing about its
    method: the phantom sweep's centralised seed 1 (lr 0.1) went from 0.72 to 0.34 by round 50, then
    to 0.86 by round 80 and stayed there at 0 % Dice, where every other run ended at 0.03-0.80 times
    its starting loss."""
    trained = [x for x in losses if not math.isnan(x)]
    if len(trained) < start + window:
        return False
    return statistics.median(trained[-window:]) > statistics.median(trained[:start])


def plateau_rule(window: int, tolerance: float, min_rounds: int = 0) -> str:
    """The rule in words, as summary.json records it (a summary written under another rule says so)."""
    rule = (f"median of the mean-Dice evaluations of the last {window} rounds < {tolerance:g} above the median "
            f"of the {window} before")
    return rule + (f", from round {min_rounds}" if min_rounds > 2 * window else "")


def plateau_fields(rows: Sequence[dict], window: int, tolerance: float, min_rounds: int = 0) -> dict:
    """summary.json fields: rounds_to_plateau (None if not reached), plateaued, final mean Dice, the
    median of the last `window` rounds' evaluations and whether training diverged."""
    rounds = [row["round"] for row in rows]
    dice = [row["dice/mean"] for row in rows]
    reached = rounds_to_plateau(rounds, dice, window, tolerance, min_rounds)
    evaluated = [d for d in dice if not math.isnan(d)]
    return {
        "rounds_to_plateau": reached,
        "plateaued": reached is not None,
        "plateau_rule": plateau_rule(window, tolerance, min_rounds),
        "dice/mean_final": evaluated[-1] if evaluated else math.nan,
        "dice/mean_last_window": last_window_median(rounds, dice, window),
        "diverged": training_diverged([row.get("train/loss", math.nan) for row in rows], window),
    }
