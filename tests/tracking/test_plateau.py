"""The plateau rule on hand-made Dice curves."""

from __future__ import annotations

import math

import pytest

from fedray.tracking.plateau import plateau_fields, rounds_to_plateau

ROUNDS = [10, 20, 30, 40, 50, 60]


def test_plateau_is_the_first_round_whose_last_window_improved_less_than_a_point():
    dice = [0.1, 0.3, 0.5, 0.505, 0.508, 0.509]
    # r=40: best in (10, 40] is 0.505 against 0.1 up to 10 -> rising. r=50: 0.508 against 0.3.
    # r=60: best in (30, 60] is 0.509 < 0.5 (best up to 30) + 0.01 -> plateaued at 60.
    assert rounds_to_plateau(ROUNDS, dice, window=30, tolerance=0.01) == 60


def test_a_run_still_rising_or_too_short_has_not_plateaued():
    rising = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    assert rounds_to_plateau(ROUNDS, rising, window=30, tolerance=0.01) is None
    assert rounds_to_plateau([10, 20], [0.5, 0.5], window=30, tolerance=0.01) is None


def test_unevaluated_rounds_are_skipped_and_a_drop_counts_as_flat():
    rounds = list(range(1, 9))
    dice = [math.nan, 0.4, math.nan, 0.6, math.nan, 0.55, math.nan, 0.58]
    # window 4: r=6: (2, 6] best 0.6 against 0.4 -> rising; r=8: (4, 8] best 0.6 < 0.6 + 0.01.
    assert rounds_to_plateau(rounds, dice, window=4, tolerance=0.01) == 8
    rows = [{"round": r, "dice/mean": d} for r, d in zip(rounds, dice)]
    fields = plateau_fields(rows, window=4, tolerance=0.01)
    assert fields["rounds_to_plateau"] == 8 and fields["plateaued"] is True
    assert fields["dice/mean_final"] == 0.58


def test_the_last_window_mean_is_the_mean_of_the_evaluations_in_the_last_window():
    from fedray.tracking.plateau import last_window_mean

    rounds = list(range(5, 65, 5))  # 5 .. 60
    dice = [math.nan if r % 10 else r / 100 for r in rounds]  # evaluated every 10 rounds: 0.1 .. 0.6
    # (30, 60]: 0.4, 0.5, 0.6
    assert last_window_mean(rounds, dice, window=30) == pytest.approx(0.5)
    assert math.isnan(last_window_mean([1, 2], [math.nan, math.nan], window=30))
    rows = [{"round": r, "dice/mean": d} for r, d in zip(rounds, dice)]
    assert plateau_fields(rows, window=30, tolerance=0.01)["dice/mean_last_window"] == pytest.approx(0.5)
