"""Reproduction check: metric-by-metric comparison of a rerun."""

from __future__ import annotations

import math

import pandas as pd

from fedray.reporting.repro import compare_rounds


def test_identical_runs_match_and_timing_is_not_compared():
    original = pd.DataFrame({"round": [1, 2], "dice/mean": [math.nan, 0.5], "time/round_s": [1.0, 2.0]})
    rerun = original.assign(**{"time/round_s": [3.0, 4.0]})
    table = compare_rounds(original, rerun).set_index("metric")
    assert table.loc["dice/mean", "match"] == "yes"  # NaN (not evaluated) equals NaN
    assert table.loc["time/round_s", "match"] == "timing (not compared)"


def test_a_difference_or_missing_round_is_flagged():
    original = pd.DataFrame({"round": [1, 2], "train/loss": [1.0, 0.5]})
    table = compare_rounds(original, original.assign(**{"train/loss": [1.0, 0.5000001]})).set_index("metric")
    assert table.loc["train/loss", "match"] == "NO" and table.loc["train/loss", "max_abs_diff"] > 0
    shorter = compare_rounds(original, original.iloc[:1]).set_index("metric")
    assert shorter.loc["train/loss", "match"] == "NO"
