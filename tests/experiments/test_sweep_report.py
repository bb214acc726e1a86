"""A small sweep run inside the test (real Ray, MLflow, NIfTI), resumed, and the report checked
against it; the same sweep run two cells at a time gives the same results."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from fedray.cli import main
from fedray.messages import TIMING_METRICS
from fedray.tracking.checkpoint import checkpoint_path, load_checkpoint
from tests.conftest import tiny_study

pytestmark = pytest.mark.ray


def write_sweep(tmp_path, name: str, **extra) -> tuple:
    """The 2 variants x 2 seeds sweep on the tiny study; returns (sweep file, study dict)."""
    study = tiny_study(tmp_path, rounds=2, resources={"cpus_per_actor": 0.5})  # alone, an actor per hospital
    study_path = tmp_path / "study.yaml"
    study_path.write_text(yaml.safe_dump(study))
    unweighted = tmp_path / "unweighted.yaml"
    unweighted.write_text(yaml.safe_dump({"method": {"name": "fedavg", "params": {"weighted": False}}}))
    sweep_path = tmp_path / f"{name}.yaml"
    sweep_path.write_text(
        yaml.safe_dump(
            {
                "name": name,
                "study": str(study_path),
                "overrides": ["train.local_steps=1"],
                "variants": [
                    {"label": "weighted"},
                    {"label": "unweighted", "fragments": [str(unweighted)]},
                ],
                "seeds": [0, 1],
                **extra,
            }
        )
    )
    return sweep_path, study


@pytest.fixture(scope="module")
def sequential(tmp_path_factory, ray_local):
    """The sweep run one cell after another (shared by the tests below: it is the slow part)."""
    tmp_path = tmp_path_factory.mktemp("sweep")
    sweep_path, study = write_sweep(tmp_path, "mini", parallel=2)
    assert main(["sweep", str(sweep_path), "--parallel", "1"]) == 0  # the flag overrides the file
    return tmp_path, sweep_path, study


def test_sweep_runs_resumes_and_reports(sequential):
    tmp_path, sweep_path, study = sequential

    uri = study["tracking"]["uri"]
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("mini")
    runs = client.search_runs([experiment.experiment_id])
    parent = [r for r in runs if r.data.tags.get("role") == "sweep"]
    cells = [r for r in runs if r.data.tags.get("role") == "study"]
    assert len(parent) == 1 and len(cells) == 4
    assert all(r.data.tags["mlflow.parentRunId"] == parent[0].info.run_id for r in cells)

    # resume: finished cells are skipped, nothing new is logged
    assert main(["sweep", str(sweep_path)]) == 0
    assert len(client.search_runs([experiment.experiment_id])) == 5

    out = tmp_path / "report"
    assert main(["report", "--experiment", "mini", "--tracking-uri", uri, "--out", str(out), "--reference", "weighted"]) == 0
    summary = pd.read_csv(out / "summary.csv", index_col=0)
    results = tmp_path / "results"
    for variant in ("weighted", "unweighted"):
        finals = [json.loads((results / f"mini__{variant}__s{s}" / "summary.json").read_text())["dice/mean"] for s in (0, 1)]
        assert summary.loc[variant, "dice/mean mean"] == pytest.approx(sum(finals) / 2)
        assert summary.loc[variant, "seeds"] == 2
    paired = pd.read_csv(out / "paired.csv")
    assert paired["comparison"].tolist() == ["weighted - unweighted"] * 3
    assert paired["dice"].tolist() == ["pooled", "per volume", "last-window median"]
    text = (out / "report.md").read_text()
    assert "| weighted |" in text and "| unweighted |" in text and "Wilcoxon" in text
    for name in ("dice_per_organ", "dice_vs_round", "dice_vs_round_by_seed", "dice_vs_communication", "inference_and_parameters"):
        png = out / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        assert f"({name}.png)" in text


def test_a_report_from_the_study_folders_equals_the_one_from_mlflow(sequential):
    tmp_path, _, study = sequential
    from_store, from_folders = tmp_path / "report_store", tmp_path / "report_folders"
    common = ["report", "--experiment", "mini", "--reference", "weighted", "--no-pictures"]
    assert main([*common, "--tracking-uri", study["tracking"]["uri"], "--out", str(from_store)]) == 0
    (tmp_path / "results" / "elsewhere").mkdir()  # not a study folder: passed over
    assert main([*common, "--runs", str(tmp_path / "results"), "--out", str(from_folders)]) == 0
    store = pd.read_csv(from_store / "summary.csv", index_col=0)
    folders = pd.read_csv(from_folders / "summary.csv", index_col=0)
    assert list(folders.index) == list(store.index) and folders["seeds"].tolist() == [2, 2]
    pd.testing.assert_frame_equal(folders, store, check_exact=False, rtol=1e-9)
    pd.testing.assert_frame_equal(pd.read_csv(from_folders / "paired.csv"), pd.read_csv(from_store / "paired.csv"))
    assert main([*common, "--runs", str(tmp_path / "results" / "elsewhere"), "--out", str(from_folders)]) == 2


@pytest.mark.slow  # minutes; tests/experiments/test_sweep_parallel.py runs a real parallel sweep by default
def test_parallel_sweep_runs_cells_at_once_with_the_same_results(sequential):
    tmp_path, _, study = sequential
    sweep_path, _ = write_sweep(tmp_path, "mini_par", parallel=2)
    assert main(["sweep", str(sweep_path)]) == 0

    client = MlflowClient(study["tracking"]["uri"])
    runs = client.search_runs([client.get_experiment_by_name("mini_par").experiment_id])
    parent = [r for r in runs if r.data.tags.get("role") == "sweep"]
    cells = {r.info.run_name: r for r in runs if r.data.tags.get("role") == "study"}
    assert len(parent) == 1 and parent[0].info.status == "FINISHED" and len(cells) == 4
    assert all(r.info.status == "FINISHED" for r in cells.values())
    assert all(r.data.tags["mlflow.parentRunId"] == parent[0].info.run_id for r in cells.values())

    # cells really ran at once, two at a time at most
    spans = sorted((r.info.start_time, r.info.end_time) for r in cells.values())
    peak = max(sum(start <= t < end for start, end in spans) for t, _ in spans)
    assert peak == 2

    # each got half of the 2-CPU cluster: 2 actors of 0.5 CPUs (alone, a cell takes 3, one per hospital)
    results = tmp_path / "results"
    for name in cells:
        assert cells[name].data.params["resources.actors"] == "2"
        assert len(json.loads((results / name / "summary.json").read_text())["actors"]) == 2
    for variant, seed in itertools.product(("weighted", "unweighted"), (0, 1)):
        alone = json.loads((results / f"mini__{variant}__s{seed}" / "summary.json").read_text())
        assert len(alone["actors"]) == 3

    # and running at once on fewer actors changed nothing: every metric of every round, final weights
    alone_runs = client.search_runs([client.get_experiment_by_name("mini").experiment_id])
    sequential_runs = {r.info.run_name: r for r in alone_runs}
    for name, run in cells.items():
        twin = sequential_runs[name.replace("mini_par__", "mini__")]
        keys = set(run.data.metrics) - TIMING_METRICS
        assert keys == set(twin.data.metrics) - TIMING_METRICS and "dice/mean" in keys
        for key in keys:
            ours = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
            theirs = [(m.step, m.value) for m in client.get_metric_history(twin.info.run_id, key)]
            assert sorted(ours) == sorted(theirs), key
        weights = load_checkpoint(checkpoint_path(results / name)).global_state
        twin_weights = load_checkpoint(checkpoint_path(results / twin.info.run_name)).global_state
        assert weights.keys() == twin_weights.keys()
        assert all(np.array_equal(weights[k], twin_weights[k]) for k in weights)


def test_cells_run_seed_by_seed_and_a_variant_may_have_its_own_seeds(tmp_path):
    from fedray.experiments.sweep import load_sweep, plan_cells

    sweep_path, _ = write_sweep(tmp_path, "order")
    data = yaml.safe_load(sweep_path.read_text())
    data["seeds"] = [0, 1]
    data["variants"][1]["seeds"] = [0]  # a screen-only variant: one seed
    data["variants"].append({"label": "extra", "seeds": [2, 0]})
    sweep_path.write_text(yaml.safe_dump(data))
    names = [c.run_name.removeprefix("order__") for c in plan_cells(load_sweep(sweep_path))]
    assert names == ["weighted__s0", "unweighted__s0", "extra__s0", "weighted__s1", "extra__s2"]

    data["variants"][1]["seeds"] = []
    sweep_path.write_text(yaml.safe_dump(data))
    with pytest.raises(Exception, match="unweighted's seeds must list at least one seed"):
        load_sweep(sweep_path)


def test_a_cell_started_under_another_config_is_neither_skipped_nor_resumed(tmp_path):
    from dataclasses import replace

    from fedray.config import save_config
    from fedray.experiments.sweep import load_sweep, plan_cells, run_sweep

    sweep_path, _ = write_sweep(tmp_path, "stale")
    sweep = load_sweep(sweep_path)
    cells = plan_cells(sweep)
    finished, stale, moved = cells[0], cells[1], cells[2]
    for cell, config in ((finished, finished.config), (stale, replace(stale.config, rounds=7))):
        save_config(config, cell.config.run_dir / "config.resolved.yaml")
        (cell.config.run_dir / "summary.json").write_text("{}")
    # the same config written on another machine: other cache and results folders
    elsewhere = replace(moved.config, data=replace(moved.config.data, cache_dir="/elsewhere/data"))
    save_config(elsewhere, moved.config.run_dir / "config.resolved.yaml")

    ran = []
    status = run_sweep(sweep, cells, lambda config, resume, stop: ran.append((config.run_name, resume)),
                       open_parent=lambda name: "parent")
    assert status[finished.run_name] == "skipped (finished before)"
    assert status[stale.run_name].startswith("failed: ") and "rounds: 2 -> 7" not in status[stale.run_name]
    assert "rounds: 7 -> 2" in status[stale.run_name]
    assert (moved.run_name, False) in ran  # no checkpoint there: run, not resumed, config accepted
    assert stale.run_name not in [name for name, _ in ran]
    assert len(ran) == len(cells) - 2


def test_a_raised_rounds_cap_resumes_finished_cells_where_the_lr_does_not_depend_on_it(tmp_path):
    from dataclasses import replace

    from fedray.config import save_config
    from fedray.experiments.sweep import extends_started_cell, load_sweep, plan_cells, run_sweep

    sweep_path, _ = write_sweep(tmp_path, "raised")  # the sweep's cap: 2 rounds
    cells = plan_cells(load_sweep(sweep_path))
    lower, no_checkpoint, poly, higher = cells
    for cell, config in ((lower, replace(lower.config, rounds=1)), (no_checkpoint, replace(no_checkpoint.config, rounds=1)),
                         (higher, replace(higher.config, rounds=3))):
        save_config(config, cell.config.run_dir / "config.resolved.yaml")
        (cell.config.run_dir / "summary.json").write_text("{}")
    poly_started = replace(poly.config, rounds=1, train=replace(poly.config.train, lr_schedule="poly"))
    save_config(poly_started, poly.config.run_dir / "config.resolved.yaml")
    for cell in (lower, poly, higher):
        (cell.config.run_dir / "checkpoints").mkdir()
        checkpoint_path(cell.config.run_dir).write_bytes(b"")

    ran = []
    status = run_sweep(load_sweep(sweep_path), cells, lambda config, resume, stop: ran.append((config.run_name, resume)),
                       open_parent=lambda name: "parent")
    assert ran == [(lower.run_name, True)]  # finished at cap 1: trained on to 2 from its checkpoint
    assert "rounds: 1 -> 2" in status[no_checkpoint.run_name]  # nothing to train on from
    assert "train.lr_schedule: poly -> constant" in status[poly.run_name]
    assert "rounds: 3 -> 2" in status[higher.run_name]  # a lower cap is never a resume
    # a poly schedule decays over the cap: raising it would change rounds already trained
    assert not extends_started_cell(replace(poly_started, rounds=2))
    assert extends_started_cell(lower.config)


def test_a_finished_cell_that_the_current_plateau_rule_would_not_have_ended_resumes(tmp_path):
    from dataclasses import replace

    from fedray.config import save_config
    from fedray.experiments.sweep import load_sweep, plan_cells, run_sweep
    from fedray.tracking.plateau import plateau_rule

    sweep_path, _ = write_sweep(tmp_path, "rule")
    cells = [replace(c, config=replace(c.config, rounds=8, eval=replace(
        c.config.eval, stop_at_plateau=True, plateau_window=2, plateau_tolerance=0.01))) for c in plan_cells(load_sweep(sweep_path))]
    old_rule, stopped_rising, stopped_flat, at_cap = cells
    rule = plateau_rule(2, 0.01)
    curves = [(old_rule, "mean Dice of the last 2 rounds < 0.01 above the mean of the 2 before", 4, [0.1, 0.5, 0.5, 0.5]),
              (stopped_rising, rule, 4, [0.1, 0.2, 0.3, 0.4]),  # rising: the rule would not have stopped it
              (stopped_flat, rule, 4, [0.1, 0.1, 0.1, 0.1]),  # (2, 4] median 0.1 < (0, 2] median 0.1 + 0.01
              (at_cap, rule, 8, [0.1 * r for r in range(1, 9)])]
    for cell, written_rule, trained, dice in curves:
        run_dir = cell.config.run_dir
        save_config(cell.config, run_dir / "config.resolved.yaml")
        (run_dir / "summary.json").write_text(json.dumps({"plateau_rule": written_rule, "rounds_trained": trained}))
        pd.DataFrame({"round": range(1, trained + 1), "dice/mean": dice}).to_csv(run_dir / "rounds.csv", index=False)
        (run_dir / "checkpoints").mkdir()
        checkpoint_path(run_dir).write_bytes(b"")

    ran = []
    status = run_sweep(load_sweep(sweep_path), cells, lambda config, resume, stop: ran.append((config.run_name, resume)),
                       open_parent=lambda name: "parent")
    assert ran == [(old_rule.run_name, True), (stopped_rising.run_name, True)]
    assert status[stopped_flat.run_name] == status[at_cap.run_name] == "skipped (finished before)"


def test_a_cell_started_under_another_plateau_rule_is_not_stale_and_resumes_where_the_new_rule_says_so(tmp_path):
    from dataclasses import replace

    from fedray.config import save_config
    from fedray.experiments.sweep import changes_since_started, load_sweep, plan_cells, run_sweep
    from fedray.tracking.plateau import plateau_rule

    sweep_path, _ = write_sweep(tmp_path, "minrounds")
    cells = [replace(c, config=replace(c.config, rounds=8, eval=replace(
        c.config.eval, stop_at_plateau=True, plateau_window=2, plateau_tolerance=0.01, plateau_min_rounds=6)))
        for c in plan_cells(load_sweep(sweep_path))]
    old_rule, before_min, after_min = cells[:3]
    rule = plateau_rule(2, 0.01, 6)
    assert rule == plateau_rule(2, 0.01) + ", from round 6"
    # flat curves: (2, 4] median 0.1 < (0, 2] median 0.1 + 0.01, met at 4 without a minimum round
    for cell, written_rule, trained, min_rounds in ((old_rule, plateau_rule(2, 0.01), 4, 0),
                                                    (before_min, rule, 4, 6),  # stopped before round 6
                                                    (after_min, rule, 6, 6)):  # stopped at 6
        started = replace(cell.config, eval=replace(cell.config.eval, plateau_min_rounds=min_rounds))
        run_dir = cell.config.run_dir
        save_config(started, run_dir / "config.resolved.yaml")
        (run_dir / "summary.json").write_text(json.dumps({"plateau_rule": written_rule, "rounds_trained": trained}))
        pd.DataFrame({"round": range(1, trained + 1), "dice/mean": [0.1] * trained}).to_csv(run_dir / "rounds.csv", index=False)
        (run_dir / "checkpoints").mkdir()
        checkpoint_path(run_dir).write_bytes(b"")
        assert changes_since_started(cell.config) == {}  # the rule's keys judge the curve, not the rounds

    ran = []
    status = run_sweep(load_sweep(sweep_path), cells, lambda config, resume, stop: ran.append(config.run_name),
                       open_parent=lambda name: "parent")
    # written under another rule: resumed; under this one but stopped before round 6, where the rule
    # cannot have been met: resumed; stopped at 6 under this rule: skipped
    assert old_rule.run_name in ran and before_min.run_name in ran
    assert status[after_min.run_name] == "skipped (finished before)"


def test_sweep_status_reads_each_cell_from_its_folder_and_estimates_the_hours_left(tmp_path, capsys):
    from fedray.config import save_config
    from fedray.experiments.sweep import hours_left, load_sweep, plan_cells, sweep_status
    from fedray.tracking.checkpoint import Checkpoint, save_checkpoint
    from fedray.tracking.plateau import plateau_rule

    sweep_path, _ = write_sweep(tmp_path, "status")
    cells = plan_cells(load_sweep(sweep_path))  # weighted s0, unweighted s0, weighted s1, unweighted s1
    weighted_s0, unweighted_s0, weighted_s1, unweighted_s1 = cells
    for cell, wall_s in ((weighted_s0, 600.0), (unweighted_s0, 1800.0)):  # finished at the 2-round cap
        run_dir = cell.config.run_dir
        save_config(cell.config, run_dir / "config.resolved.yaml")
        (run_dir / "summary.json").write_text(json.dumps({
            "plateau_rule": plateau_rule(cell.config.eval.plateau_window, cell.config.eval.plateau_tolerance,
                                         cell.config.eval.plateau_min_rounds),
            "rounds_trained": 2, "rounds_to_plateau": None, "dice/mean_last_window": 0.25, "wall_s": wall_s}))
        pd.DataFrame({"round": [1, 2], "dice/mean": [0.2, 0.3]}).to_csv(run_dir / "rounds.csv", index=False)
    in_progress = weighted_s1.config.run_dir
    save_config(weighted_s1.config, in_progress / "config.resolved.yaml")
    save_checkpoint(Checkpoint(1, {"w": np.zeros(2, np.float32)}, {"wall_s": 240.0}), checkpoint_path(in_progress))

    rows = sweep_status(cells)
    assert [r["state"] for r in rows] == ["finished", "finished", "in progress", "not started"]
    assert (rows[0]["rounds"], rows[0]["cap"], rows[0]["dice_last_window"], rows[0]["wall_s"]) == (2, 2, 0.25, 600.0)
    assert (rows[2]["rounds"], rows[2]["wall_s"]) == (1, 240.0)
    # weighted s1: its variant's median 600 s less the 240 run; unweighted s1: 1800 s
    assert hours_left(rows) == pytest.approx((600 - 240 + 1800) / 3600)
    assert math.isnan(hours_left(rows[2:]))  # nothing finished: no estimate

    assert main(["sweep", str(sweep_path), "--status"]) == 0  # reads the folders; starts no Ray
    captured = capsys.readouterr()
    out = " ".join((captured.out + captured.err).split())  # the summary line on stderr, the table on stdout
    assert "2 of 4 studies finished, 0.7 h of study time so far; about 0.6 h left" in out
    assert "sweep status" in out  # the table's title (its cells wrap with the terminal's width)


def test_a_cell_whose_folder_another_process_holds_is_skipped_and_shown_running(tmp_path):
    from fedray.experiments.sweep import RUNNING, load_sweep, plan_cells, run_sweep, sweep_status
    from fedray.tracking.folder_lock import study_folder_lock
    from tests.tracking.test_folder_lock import hold_in_another_process

    sweep_path, _ = write_sweep(tmp_path, "held")
    cells = plan_cells(load_sweep(sweep_path))
    holder = hold_in_another_process(cells[0].config.run_dir)  # e.g. a sweep started twice
    try:
        assert sweep_status(cells)[0]["state"] == RUNNING and f"pid {holder.pid}" in sweep_status(cells)[0]["why"]

        def run_cell(config, resume, stop):
            with study_folder_lock(config.run_dir):  # as run_study does
                ran.append(config.run_name)

        ran = []
        status = run_sweep(load_sweep(sweep_path), cells, run_cell, open_parent=lambda name: "parent")
    finally:
        holder.kill()
        holder.wait()
    assert status[cells[0].run_name].startswith(f"skipped (in use by another process: pid {holder.pid} on ")
    assert ran == [c.run_name for c in cells[1:]]  # the others ran


def test_a_cell_finished_by_another_process_after_the_sweep_looked_is_skipped(tmp_path):
    from fedray.config import save_config
    from fedray.experiments.sweep import load_sweep, plan_cells, run_sweep
    from fedray.tracking.plateau import plateau_rule

    sweep_path, _ = write_sweep(tmp_path, "since")
    cells = plan_cells(load_sweep(sweep_path))

    def finish(cell):  # as another sweep would have left it
        ev = cell.config.eval
        save_config(cell.config, cell.config.run_dir / "config.resolved.yaml")
        (cell.config.run_dir / "summary.json").write_text(json.dumps({
            "plateau_rule": plateau_rule(ev.plateau_window, ev.plateau_tolerance, ev.plateau_min_rounds),
            "rounds_trained": cell.config.rounds}))

    ran = []

    def run_cell(config, resume, stop):
        ran.append(config.run_name)
        if config.run_name == cells[0].run_name:
            finish(cells[1])  # meanwhile, another process finishes the next cell

    status = run_sweep(load_sweep(sweep_path), cells, run_cell, open_parent=lambda name: "parent")
    assert status[cells[1].run_name] == "skipped (finished since)"
    assert ran == [cells[0].run_name, *[c.run_name for c in cells[2:]]]
