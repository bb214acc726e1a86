"""The plateau rule on hand-made Dice curves."""

from __future__ import annotations

import math

import pytest

from fedray.tracking.plateau import plateau_fields, rounds_to_plateau

ROUNDS = [10, 20, 30, 40, 50, 60, 70, 80]


def test_plateau_is_the_first_round_whose_window_median_rose_less_than_a_point_over_the_window_before():
    dice = [0.1, 0.3, 0.5, 0.52, 0.50, 0.51, 0.50, 0.51]
    # window 30: three evaluations a window. r=60: median of (30, 60] = median(0.52, 0.50, 0.51) = 0.51
    # against (0, 30]: median(0.1, 0.3, 0.5) = 0.3 -> rising. r=70: (40, 70] median(0.50, 0.51, 0.50) = 0.50
    # against (10, 40] median(0.3, 0.5, 0.52) = 0.5; 0.50 < 0.51 -> plateaued at 70 (window means: at 80)
    assert rounds_to_plateau(ROUNDS, dice, window=30, tolerance=0.01) == 70


def test_one_lucky_evaluation_does_not_stop_a_rising_run():
    spiky_rise = [0.10, 0.40, 0.12, 0.20, 0.25, 0.30, 0.35, 0.40]  # a spike at 20, then a steady rise
    # the best-evaluation rule would stop at 50 (best of (20, 50] 0.25 < 0.40 + 0.01); the window medians:
    # r=60: 0.25 vs 0.12; r=70: 0.30 vs 0.20; r=80: 0.35 vs 0.20 -> still rising
    assert rounds_to_plateau(ROUNDS, spiky_rise, window=30, tolerance=0.01) is None


def test_one_collapsed_evaluation_does_not_stop_a_rising_run():
    collapse = [0.30, 0.35, 0.40, 0.45, 0.05, 0.55, 0.60, 0.65]  # rising, one evaluation collapsed at 50
    # window means would stop at 60: mean(0.45, 0.05, 0.55) = 0.35 < mean(0.30, 0.35, 0.40) + 0.01 = 0.36.
    # medians: r=60: 0.45 vs 0.35; r=70: median(0.05, 0.55, 0.60) = 0.55 vs 0.40; r=80: 0.60 vs
    # median(0.40, 0.45, 0.05) = 0.40 -> still rising
    assert rounds_to_plateau(ROUNDS, collapse, window=30, tolerance=0.01) is None


def test_one_spike_does_not_keep_a_flat_run_going():
    spike = [0.5, 0.5, 0.5, 0.5, 0.5, 0.9, 0.5, 0.5]
    # r=60: median(0.5, 0.5, 0.9) = 0.5 < median(0.5, 0.5, 0.5) + 0.01 -> plateaued at 60; the window
    # means (0.633 against 0.5 at 60, 70 and 80) would not stop it at all
    assert rounds_to_plateau(ROUNDS, spike, window=30, tolerance=0.01) == 60


def test_a_run_still_rising_or_too_short_has_not_plateaued():
    rising = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    assert rounds_to_plateau(ROUNDS, rising, window=30, tolerance=0.01) is None
    # flat, but 50 rounds hold no two 30-round windows
    assert rounds_to_plateau(ROUNDS[:5], [0.5] * 5, window=30, tolerance=0.01) is None


def test_an_even_window_takes_the_mean_of_its_two_middle_evaluations():
    rounds = [5, 10, 15, 20, 25, 30, 35, 40]
    dice = [0.1, 0.2, 0.3, 0.9, 0.30, 0.35, 0.31, 0.40]
    # window 20, four evaluations a window. r=40: median(0.30, 0.35, 0.31, 0.40) = (0.31 + 0.35) / 2 = 0.33
    # against median(0.1, 0.2, 0.3, 0.9) = (0.2 + 0.3) / 2 = 0.25 -> rising (0.33 >= 0.26)
    assert rounds_to_plateau(rounds, dice, window=20, tolerance=0.01) is None
    # with a tolerance of 0.09 the rise of 0.08 counts as flat
    assert rounds_to_plateau(rounds, dice, window=20, tolerance=0.09) == 40


def test_unevaluated_rounds_are_skipped_and_a_drop_counts_as_flat():
    rounds = list(range(1, 9))
    dice = [math.nan, 0.4, math.nan, 0.6, math.nan, 0.55, math.nan, 0.58]
    # window 2: r=4: (2, 4] 0.6 against (0, 2] 0.4 -> rising; r=6: (4, 6] 0.55 against (2, 4] 0.6 -> a drop: flat
    assert rounds_to_plateau(rounds, dice, window=2, tolerance=0.01) == 6
    rows = [{"round": r, "dice/mean": d} for r, d in zip(rounds, dice)]
    fields = plateau_fields(rows, window=2, tolerance=0.01)
    assert fields["rounds_to_plateau"] == 6 and fields["plateaued"] is True
    assert fields["dice/mean_final"] == 0.58
    assert fields["plateau_rule"] == (
        "median of the mean-Dice evaluations of the last 2 rounds < 0.01 above the median of the 2 before"
    )


def test_the_last_window_level_is_the_median_of_the_evaluations_in_the_last_window():
    from fedray.tracking.plateau import last_window_median

    rounds = list(range(5, 65, 5))  # 5 .. 60
    dice = [math.nan if r % 10 else r / 100 for r in rounds]  # evaluated every 10 rounds: 0.1 .. 0.6
    dice[-1] = 0.05  # round 60 collapsed
    # (30, 60]: 0.4, 0.5, 0.05 -> median 0.4 (the mean would read 0.317)
    assert last_window_median(rounds, dice, window=30) == pytest.approx(0.4)
    assert math.isnan(last_window_median([1, 2], [math.nan, math.nan], window=30))
    rows = [{"round": r, "dice/mean": d} for r, d in zip(rounds, dice)]
    assert plateau_fields(rows, window=30, tolerance=0.01)["dice/mean_last_window"] == pytest.approx(0.4)


def test_a_level_is_reached_when_the_window_median_reaches_it_not_one_lucky_evaluation():
    from fedray.tracking.plateau import rounds_to_level

    dice = [0.2, 0.9, 0.3, 0.5, 0.6, 0.7, math.nan, 0.75]
    # window 30, at least three evaluations: r=10 and 20 hold one and two (0.9 at 20 alone would read
    # 0.55 over two); r=30 median(0.2, 0.9, 0.3) = 0.3; r=40 (10, 40]: median(0.9, 0.3, 0.5) = 0.5;
    # r=50: median(0.3, 0.5, 0.6) = 0.5; r=60: median(0.5, 0.6, 0.7) = 0.6; round 70 not evaluated;
    # r=80 (50, 80] holds two evaluations (0.7, 0.75): too few
    assert rounds_to_level(ROUNDS, dice, window=30, level=0.6) == 60  # not 20, where one evaluation read 0.9
    assert rounds_to_level(ROUNDS, dice, window=30, level=0.5) == 40
    assert rounds_to_level(ROUNDS, dice, window=30, level=0.7) is None
    assert rounds_to_level([5, 10, 15, 20], [0.9, 0.9, 0.9, 0.9], window=30, level=0.8) == 15  # from the third


def test_no_plateau_before_the_minimum_round():
    flat_early = [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    assert rounds_to_plateau(ROUNDS, flat_early, window=30, tolerance=0.01) == 60
    # from round 75: 60 and 70 are skipped, 80 is the first evaluated round it may be met at
    assert rounds_to_plateau(ROUNDS, flat_early, window=30, tolerance=0.01, min_rounds=75) == 80
    assert rounds_to_plateau(ROUNDS, flat_early, window=30, tolerance=0.01, min_rounds=90) is None
    rows = [{"round": r, "dice/mean": d} for r, d in zip(ROUNDS, flat_early)]
    fields = plateau_fields(rows, window=30, tolerance=0.01, min_rounds=75)
    assert fields["rounds_to_plateau"] == 80 and fields["plateau_rule"].endswith(", from round 75")


def test_a_run_diverged_where_its_training_loss_ended_above_where_it_started():
    from fedray.tracking.plateau import training_diverged

    falling = [0.7, 0.7, 0.6, 0.6, 0.5] + [0.2] * 4  # first-5 median 0.6, last-4 median 0.2
    assert not training_diverged(falling, window=4)
    collapsed = [0.7, 0.72, 0.65, 0.6, 0.55, 0.4, 0.86, 0.85, 0.87, 0.86]  # 0.65 at the start, 0.86 at the end
    assert training_diverged(collapsed, window=4)
    assert not training_diverged([0.7, 0.72, 0.65, 0.6, 0.55, 0.4, 0.5, 0.6, 0.65, 0.64], window=4)  # 0.62 < 0.65
    assert not training_diverged(collapsed[:8], window=4)  # shorter than 5 + 4 rounds: not judged
    assert training_diverged([math.nan] + collapsed, window=4)  # a round without training is skipped
