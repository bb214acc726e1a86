"""The plateau rule on hand-made Dice curves."""

from __future__ import annotations

import math

import pytest

from fedray.tracking.plateau import plateau_fields, rounds_to_plateau

ROUNDS = [10, 20, 30, 40, 50, 60, 70, 80]


def test_plateau_is_the_first_round_whose_window_mean_rose_less_than_a_point_over_the_window_before():
    dice = [0.1, 0.3, 0.5, 0.52, 0.50, 0.51, 0.50, 0.51]
    # window 30. r=60: mean of (30, 60] = (0.52 + 0.50 + 0.51) / 3 = 0.51 against (0, 30]:
    # (0.1 + 0.3 + 0.5) / 3 = 0.3 -> rising. r=70: (40, 70] = (0.50 + 0.51 + 0.50) / 3 = 0.5033 against
    # (10, 40] = (0.3 + 0.5 + 0.52) / 3 = 0.44 -> rising. r=80: (50, 80] = (0.51 + 0.50 + 0.51) / 3 =
    # 0.5067 against (20, 50] = (0.5 + 0.52 + 0.50) / 3 = 0.5067; 0.5067 < 0.5167 -> plateaued at 80.
    assert rounds_to_plateau(ROUNDS, dice, window=30, tolerance=0.01) == 80


def test_one_lucky_evaluation_does_not_stop_a_rising_run():
    spiky_rise = [0.10, 0.40, 0.12, 0.20, 0.25, 0.30, 0.35, 0.40]  # a spike at 20, then a steady rise
    # the best-evaluation rule would stop at 50 (best of (20, 50] 0.25 < 0.40 + 0.01); the window means:
    # r=60: 0.25 vs 0.2067; r=70: 0.30 vs 0.24; r=80: 0.35 vs 0.19 -> still rising
    assert rounds_to_plateau(ROUNDS, spiky_rise, window=30, tolerance=0.01) is None


def test_a_run_still_rising_or_too_short_has_not_plateaued():
    rising = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    assert rounds_to_plateau(ROUNDS, rising, window=30, tolerance=0.01) is None
    # flat, but 50 rounds hold no two 30-round windows
    assert rounds_to_plateau(ROUNDS[:5], [0.5] * 5, window=30, tolerance=0.01) is None


def test_unevaluated_rounds_are_skipped_and_a_drop_counts_as_flat():
    rounds = list(range(1, 9))
    dice = [math.nan, 0.4, math.nan, 0.6, math.nan, 0.55, math.nan, 0.58]
    # window 2: r=4: (2, 4] 0.6 against (0, 2] 0.4 -> rising; r=6: (4, 6] 0.55 against (2, 4] 0.6 -> a drop: flat
    assert rounds_to_plateau(rounds, dice, window=2, tolerance=0.01) == 6
    rows = [{"round": r, "dice/mean": d} for r, d in zip(rounds, dice)]
    fields = plateau_fields(rows, window=2, tolerance=0.01)
    assert fields["rounds_to_plateau"] == 6 and fields["plateaued"] is True
    assert fields["dice/mean_final"] == 0.58
    assert fields["plateau_rule"] == "mean Dice of the last 2 rounds < 0.01 above the mean of the 2 before"


def test_the_last_window_mean_is_the_mean_of_the_evaluations_in_the_last_window():
    from fedray.tracking.plateau import last_window_mean

    rounds = list(range(5, 65, 5))  # 5 .. 60
    dice = [math.nan if r % 10 else r / 100 for r in rounds]  # evaluated every 10 rounds: 0.1 .. 0.6
    # (30, 60]: 0.4, 0.5, 0.6
    assert last_window_mean(rounds, dice, window=30) == pytest.approx(0.5)
    assert math.isnan(last_window_mean([1, 2], [math.nan, math.nan], window=30))
    rows = [{"round": r, "dice/mean": d} for r, d in zip(rounds, dice)]
    assert plateau_fields(rows, window=30, tolerance=0.01)["dice/mean_last_window"] == pytest.approx(0.5)
