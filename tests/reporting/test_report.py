"""Report maths on hand-made tables: plateau rounds, seed statistics and paired differences."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from fedray.reporting.report import paired_tests, plateau_round, variant_of


def test_variant_names_come_from_sweep_run_names():
    assert variant_of("bench__fedkd__s2", "bench") == "fedkd"
    assert variant_of("bench__fedkd__s2__train.lr=0.1", "bench") == "fedkd"
    assert variant_of("quickstart", "bench") == "quickstart"


def test_plateau_round_applies_the_plateau_rule_to_a_history():
    history = pd.DataFrame({"step": [12, 3, 6, 9], "value": [0.49, 0.2, 0.495, 0.5]})
    # window 3 (the steps sorted first): r=6: (3, 6] mean 0.495 vs (0, 3] 0.2 -> rising;
    # r=9: (6, 9] 0.5 < (3, 6] 0.495 + 0.01 -> plateaued at 9.
    assert plateau_round(history, window=3, tolerance=0.01) == 9
    # window 6: r=12: (6, 12] mean 0.495 vs (0, 6] (0.2 + 0.495) / 2 = 0.3475 -> rising
    assert math.isnan(plateau_round(history, window=6, tolerance=0.01))
    assert math.isnan(plateau_round(history, window=30))  # too short for a 30-round window
    assert math.isnan(plateau_round(history.iloc[0:0]))


def test_paired_differences_by_seed():
    runs = pd.DataFrame(
        {
            "seed": [0, 1, 2, 0, 1, 2],
            "variant": ["a"] * 3 + ["b"] * 3,
            "dice/mean": [0.50, 0.60, 0.55, 0.40, 0.58, 0.45],
        }
    )
    [row] = paired_tests(runs, "a").to_dict("records")
    assert row["comparison"] == "a - b" and row["paired seeds"] == 3
    assert row["mean diff (Dice points)"] == pytest.approx(100 * (0.10 + 0.02 + 0.10) / 3)
    assert row["reference wins"] == 3
    assert row["wilcoxon p"] == pytest.approx(0.25)  # the smallest two-sided p with 3 pairs
    assert row["same platform"] == 0 and row["platform not recorded"] == 3  # runs without platforms


def test_paired_tests_count_the_pairs_trained_on_one_platform_throughout():
    x, y, mixed = "from round 1: X", "from round 1: Y", "from round 1: not recorded; from round 9: X"
    runs = pd.DataFrame({"seed": [0, 1, 2, 3] * 2, "variant": ["a"] * 4 + ["b"] * 4,
                         "dice/mean": [0.5, 0.6, 0.55, 0.5, 0.4, 0.58, 0.45, 0.4],
                         "platforms": [x, x, x, mixed, x, y, "", mixed]})
    [row] = paired_tests(runs, "a").to_dict("records")
    assert (row["same platform"], row["platform not recorded"]) == (1, 2)  # seed 0; seeds 2 and 3 unknown


def test_runs_group_by_config_not_by_name_and_the_differing_keys_are_shown():
    from fedray.reporting.report import config_differences, tidy_runs

    def run(run_id, name, seed, lr, rounds="40", digest=None):
        row = {"run_id": run_id, "tags.mlflow.runName": name, "tags.seed": str(seed), "tags.study": "quickstart",
               "params.name": "quickstart", "params.seed": str(seed), "params.rounds": rounds, "params.train.lr": lr,
               "params.tracking.run_name": name, "metrics.dice/mean": 0.5}
        if digest:
            row["tags.config_digest"] = digest
        return row

    raw = pd.DataFrame([
        run("a", "quickstart", 0, "0.003"), run("b", "quickstart-2", 1, "0.003"),  # seeds of one config
        run("c", "quickstart-3", 0, "0.001"), run("d", "quickstart-4", 0, "0.003", rounds="5"),
    ])
    tidy = tidy_runs(raw, "fedray-quickstart")
    variants = dict(zip(tidy["run_id"], tidy["variant"]))
    assert variants["a"] == variants["b"] != variants["c"] != variants["d"]  # never 4 "seeds" of one method
    assert all(v.startswith("quickstart@") for v in variants.values())
    differences = config_differences(raw, tidy)
    assert set(differences.columns) == {"rounds", "train.lr"}  # not the seed, the run name or tracking keys


def test_summary_has_per_volume_dice_hd95_over_organs_and_rounds_trained():
    from fedray.reporting.report import summarise

    runs = pd.DataFrame(
        {
            "run_id": ["r0", "r1", "q0"],
            "variant": ["a", "a", "b"],
            "seed": [0, 1, 0],
            "dice/mean": [0.5, 0.7, 0.4],
            "dice_per_volume/mean": [0.4, 0.6, 0.3],
            "dice/liver": [0.5, 0.7, 0.4],
            "dice/spleen": [0.5, math.nan, 0.4],
            "hd95/liver": [10.0, 20.0, 5.0],
            "hd95/spleen": [30.0, math.nan, 7.0],  # NaN: the organ is not in the test set of r1
            "comm/bytes_total": [4e6, 4e6, 2e6],
            "comm/bytes_preparation": [0.0, 0.0, 0.0],
            "params_total": [10, 10, 10],
            "infer/s_per_volume": [1.0, 1.0, 1.0],
        }
    )
    histories = pd.DataFrame(
        {
            "run_id": ["r0", "r0", "r1", "r1", "q0"],
            "metric": ["comm/bytes_down"] * 5,
            "step": [1, 40, 1, 80, 35],  # r0 stopped at its plateau at round 40 of 80
            "value": [1.0] * 5,
        }
    )
    summary = summarise(runs, histories, ["liver", "spleen"])
    assert summary.loc["a", "dice_per_volume/mean mean"] == pytest.approx(0.5)
    assert summary.loc["a", "hd95_mean mean"] == pytest.approx(((10 + 30) / 2 + 20) / 2)  # organs, then seeds
    assert summary.loc["b", "hd95_mean mean"] == pytest.approx(6.0)
    assert summary.loc["a", "rounds trained (median)"] == 60 and summary.loc["b", "rounds trained (median)"] == 35
    assert summary.loc["a", "MB/round"] == pytest.approx((4 / 40 + 4 / 80) / 2)
    assert summary["diverged"].tolist() == [0, 0]  # no training loss logged: none judged diverged

    # r1's training loss ends above where it started (a collapse), r0's falls
    loss = lambda rid, values: pd.DataFrame({"run_id": rid, "metric": "train/loss",  # noqa: E731
                                             "step": range(1, len(values) + 1), "value": values})
    with_loss = pd.concat([histories, loss("r0", [0.7] * 5 + [0.1] * 30), loss("r1", [0.7] * 5 + [0.9] * 30)])
    diverged = summarise(runs, with_loss, ["liver", "spleen"])["diverged"]
    assert diverged["a"] == 1 and diverged["b"] == 0


def test_paired_tests_on_per_volume_dice_and_none_without_it():
    runs = pd.DataFrame({"seed": [0, 1, 0, 1], "variant": ["a", "a", "b", "b"],
                         "dice/mean": [0.5, 0.6, 0.4, 0.5], "dice_per_volume/mean": [0.3, 0.6, 0.4, 0.4]})
    [row] = paired_tests(runs, "a", "dice_per_volume/mean").to_dict("records")
    assert row["mean diff (Dice points)"] == pytest.approx(100 * (-0.1 + 0.2) / 2) and row["reference wins"] == 1
    assert paired_tests(runs.drop(columns="dice_per_volume/mean"), "a", "dice_per_volume/mean").empty


def test_last_window_dice_is_the_median_of_each_runs_evaluations_over_its_last_30_rounds():
    from fedray.reporting.report import last_window_dice

    runs = pd.DataFrame({"run_id": ["r0", "r1"]})
    histories = pd.DataFrame(
        {
            "run_id": ["r0"] * 4 + ["r1"] * 2,
            "metric": ["dice/mean"] * 6,
            # r0 ends at 100: (70, 100] holds 80, 90, 100 -> median(0.5, 0.4, 0.9) = 0.5 (mean 0.6);
            # round 70 is out. r1: median(0.2, 0.3) = 0.25
            "step": [70, 80, 90, 100, 10, 20],
            "value": [0.1, 0.5, 0.4, 0.9, 0.2, 0.3],
        }
    )
    assert last_window_dice(runs, histories).tolist() == pytest.approx([0.5, 0.25])


def test_rounds_to_levels_per_run_and_their_median_over_the_seeds_that_reached_them():
    from fedray.reporting.report import levels_table, rounds_to_levels

    runs = pd.DataFrame({"run_id": ["a0", "a1", "b0"], "variant": ["a", "a", "b"], "seed": [0, 1, 0]})
    histories = pd.DataFrame(
        {
            "run_id": ["a0"] * 4 + ["a1"] * 4 + ["b0"] * 4,
            "metric": ["dice/mean"] * 12,
            "step": [10, 20, 30, 40] * 3,
            # window 30, at least three evaluations a window: a0 medians at 30 and 40: 0.6, 0.7 -> 50 % and
            # 60 % at 30; a1 median(0.4, 0.5, 0.5) = 0.5 at 30, median(0.5, 0.5, 0.7) = 0.5 at 40 -> 50 %
            # at 30, 60 % never; b0 0.3, 0.3 -> neither
            "value": [0.5, 0.6, 0.7, 0.8, 0.4, 0.5, 0.5, 0.7, 0.1, 0.3, 0.3, 0.3],
        }
    )
    levels = rounds_to_levels(runs, histories, levels=(0.5, 0.6))
    assert levels.loc[0, ["50 %", "60 %"]].tolist() == [30.0, 30.0]
    assert levels.loc[1, "50 %"] == 30.0 and math.isnan(levels.loc[1, "60 %"])
    assert levels.loc[2, ["50 %", "60 %"]].isna().all()
    table = levels_table(levels, ["a", "b"]).splitlines()
    assert table[2] == "| a | 30 (2/2) | 30 (1/2) |"  # the median over the seeds that reached it
    assert table[3] == "| b | not reached | not reached |"


def test_study_times_per_variant_and_the_hours_of_all_runs():
    from fedray.reporting.report import study_times

    runs = pd.DataFrame({"variant": ["a", "a", "a", "b"], "wall_s": [600.0, 1200.0, 1800.0, 90.0]})
    table, hours = study_times(runs, ["b", "a"])
    assert table.splitlines()[2:] == ["| b | 1 | 1.5 | 1.5-1.5 | 2 |", "| a | 3 | 20.0 | 10.0-30.0 | 60 |"]
    assert hours == pytest.approx((600 + 1200 + 1800 + 90) / 3600)
    table, hours = study_times(runs.assign(wall_s=math.nan), ["a", "b"])  # runs from before wall_s was logged
    assert table == "" and math.isnan(hours)


def test_platforms_table_lists_which_runs_trained_on_each_platform():
    from fedray.reporting.report import platforms_table

    runs = pd.DataFrame({"variant": ["a", "a", "b", "b"], "seed": [1, 0, 0, 1],
                         "platforms": ["from round 1: X", "from round 1: X", "", "from round 1: Y"]})
    assert platforms_table(runs).splitlines()[2:] == [
        "| from round 1: X | 2 | a s0, a s1 |", "| not recorded | 1 | b s0 |", "| from round 1: Y | 1 | b s1 |"]
    assert platforms_table(runs.assign(platforms="")) == ""  # runs from before platforms were recorded


def test_every_variant_keeps_one_style_in_every_plot_and_thirteen_do_not_repeat_one():
    from fedray.reporting.report import variant_styles

    names = [f"v{i:02d}" for i in range(13)]
    styles = variant_styles(list(reversed(names)))  # by name, not by the order the runs came in
    assert styles == variant_styles(names)
    assert len({(s["color"], s["linestyle"]) for s in styles.values()}) == 13
    assert styles["v10"]["color"] == styles["v00"]["color"] and styles["v10"]["linestyle"] == "--"


def test_the_per_seed_plot_shows_the_variants_run_at_several_seeds(tmp_path):
    from fedray.reporting.report import _plot_curves_by_seed, seeded_variants

    runs = pd.DataFrame({"run_id": ["a0", "a1", "b0", "b1", "c0"], "variant": ["a", "a", "b", "b", "c"],
                         "seed": [0, 1, 0, 2, 0]})
    assert seeded_variants(runs) == (["a", "b"], [0, 1, 2])  # c ran at one seed: screened, not paired
    histories = pd.DataFrame([{"run_id": r, "metric": "dice/mean", "step": s, "value": v}
                              for r in runs["run_id"] for s, v in ((5, 0.1), (10, 0.3))])
    png = _plot_curves_by_seed(runs, histories, tmp_path / "by_seed.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _plot_curves_by_seed(runs[runs["variant"] == "c"], histories, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
