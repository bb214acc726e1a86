"""The plateau rule on hand-made Dice curves."""

from __future__ import annotations

import math

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
