"""Kill a study's whole process tree mid-run, resume it, and get exactly the uninterrupted result."""

from __future__ import annotations

import signal
import subprocess
import time

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from fedray.config import config_from_data, load_config, with_absolute_paths
from fedray.data.federation import prepare_hospitals
from fedray.messages import TIMING_METRICS, Metric
from fedray.simulation.launch import run_study
from fedray.tracking.checkpoint import checkpoint_path, load_checkpoint
from fedray.tracking.mlflow import KILLED_REASON
from fedray.tracking.provenance import compute_platform
from tests.conftest import kill_when, start_cli, tiny_study

pytestmark = pytest.mark.ray

ROUNDS = 4


def run_in_process(config, resume=False):
    hospitals, test_dir = prepare_hospitals(config)
    return run_study(config, hospitals, test_dir, resume=resume)


def named(study: dict, name: str, rounds: int = ROUNDS):
    return with_absolute_paths(config_from_data(
        {**study, "rounds": rounds, "tracking": {**study["tracking"], "run_name": name}}))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, ray_local):
    """The tiny study run straight through its ROUNDS rounds: what every resumed run must equal."""
    study = tiny_study(tmp_path_factory.mktemp("resume"), rounds=ROUNDS)
    reference = named(study, "reference")
    run_in_process(reference)
    return study, reference


def test_sigkill_then_resume_equals_uninterrupted(tmp_path, uninterrupted):
    study, reference = uninterrupted
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({**study, "tracking": {**study["tracking"], "run_name": "killed"}}))
    killed_dir = reference.run_dir.parent / "killed"
    process = start_cli("run", str(path))
    stopped_at = kill_when(process, killed_dir, lambda checkpoint: checkpoint.round >= 2).round
    assert stopped_at < ROUNDS

    resumed = load_config(killed_dir / "config.resolved.yaml")
    summary = run_in_process(resumed, resume=True)

    final_ref = load_checkpoint(checkpoint_path(reference.run_dir))
    final_resumed = load_checkpoint(checkpoint_path(killed_dir))
    assert final_ref.round == final_resumed.round == ROUNDS
    for key, value in final_ref.global_state.items():
        assert np.array_equal(value, final_resumed.global_state[key]), key  # bit-identical on CPU

    timing = sorted(TIMING_METRICS)
    ref_rows = pd.read_csv(reference.run_dir / "rounds.csv").drop(columns=timing)
    resumed_rows = pd.read_csv(killed_dir / "rounds.csv").drop(columns=timing)
    pd.testing.assert_frame_equal(ref_rows, resumed_rows)
    hospitals = [pd.read_csv(d / "hospitals.csv").drop(columns="seconds") for d in (reference.run_dir, killed_dir)]
    pd.testing.assert_frame_equal(*hospitals)  # each round's hospitals once, as if never interrupted

    client = MlflowClient(study["tracking"]["uri"])
    run = client.get_run(summary["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "killed"
    assert "is gone" in run.data.tags[KILLED_REASON]  # the hard kill left it RUNNING; the resume said so
    [session] = summary["platforms"]  # resumed on the same platform: one record from round 1
    assert session["from_round"] == 1 and session["platforms"] == [compute_platform(torch.device("cpu"))]
    for name in (Metric.TRAIN_LOSS.value, Metric.DICE_MEAN.value, Metric.BYTES_TOTAL.value):
        assert [m.step for m in client.get_metric_history(run.info.run_id, name)] == list(range(1, ROUNDS + 1))



def test_resume_into_a_store_without_the_run_recreates_it_from_the_checkpoint(tmp_path, uninterrupted):
    """A run folder carried to another machine (or a sweep to another session) without its MLflow
    store: the resumed study opens a new run, tagged with the old id, holding every round again."""
    import shutil

    from fedray.tracking.mlflow import RECREATED_FROM

    study, reference = uninterrupted
    moved = with_absolute_paths(config_from_data({
        **study, "rounds": ROUNDS,
        "tracking": {**study["tracking"], "run_name": "moved", "uri": f"sqlite:///{tmp_path}/elsewhere.db"},
    }))
    shutil.copytree(reference.run_dir, moved.run_dir)
    old_id = load_checkpoint(checkpoint_path(moved.run_dir)).meta["run_id"]

    summary = run_in_process(moved, resume=True)  # finished: nothing left to train, the run is rebuilt

    client = MlflowClient(moved.tracking.uri)
    run = client.get_run(summary["run_id"])
    assert summary["run_id"] != old_id and run.data.tags[RECREATED_FROM] == old_id
    assert run.info.status == "FINISHED" and run.info.run_name == "moved"
    rows = pd.read_csv(reference.run_dir / "rounds.csv")
    history = client.get_metric_history(run.info.run_id, Metric.TRAIN_LOSS.value)
    assert [(m.step, m.value) for m in history] == list(zip(rows["round"], rows[Metric.TRAIN_LOSS.value]))
    assert run.data.metrics["dice/mean_final"] == pytest.approx(summary["dice/mean_final"])


def test_resume_without_checkpoint_starts_the_study_again_and_without_config_is_a_clear_error(tmp_path, monkeypatch):
    import fedray.cli
    from fedray.config import save_config

    config = config_from_data(tiny_study(tmp_path))
    assert fedray.cli.main(["resume", str(config.run_dir)]) == 2  # not a run folder
    config.run_dir.mkdir(parents=True)
    save_config(config, config.run_dir / "config.resolved.yaml")
    started = []
    monkeypatch.setattr(fedray.cli, "_run_config", lambda cfg, resume: started.append((cfg.run_name, resume)) or 0)
    assert fedray.cli.main(["resume", str(config.run_dir)]) == 0
    assert started == [(config.run_name, False)]  # killed before its first checkpoint: nothing to continue


# Ctrl-C in the default run is slow: SIGTERM reaches the same KeyboardInterrupt path (simulation/run.py).
@pytest.mark.parametrize(
    "stop_signal",
    [pytest.param(signal.SIGINT, marks=pytest.mark.slow), signal.SIGTERM],
    ids=["ctrl-c", "sigterm"],
)
def test_ctrl_c_or_sigterm_stops_after_a_checkpoint_and_marks_the_run_killed(tmp_path, stop_signal):
    study = tiny_study(tmp_path, rounds=30)
    study["tracking"] = {**study["tracking"], "run_name": "interrupted"}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    run_dir = tmp_path / "results" / "interrupted"
    process = start_cli("run", str(path), stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not checkpoint_path(run_dir).is_file():
        assert process.poll() is None and time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.2)
    process.send_signal(stop_signal)  # what Ctrl-C sends, or `kill` / `timeout`
    _, stderr = process.communicate(timeout=240)
    assert process.returncode == 130
    assert "fedray resume" in " ".join(stderr.split())
    assert "SIGTERM received" not in stderr  # Ray's own handler (exit at once, run left RUNNING) is not used
    stopped = load_checkpoint(checkpoint_path(run_dir))
    assert stopped.round < 30
    client = MlflowClient(study["tracking"]["uri"])
    run = client.get_run(stopped.meta["run_id"])
    assert run.info.status == "KILLED"
    assert len(pd.read_csv(run_dir / "rounds.csv")) == stopped.round  # stopped right after that checkpoint


@pytest.mark.slow  # 25 s; the sweep's choice to extend stays in the default run (test_sweep_report.py)
def test_a_finished_study_trained_on_to_a_raised_cap_equals_one_started_with_it(uninterrupted):
    from fedray.config import load_run_config

    study, reference = uninterrupted
    short = named(study, "extended", rounds=2)
    first = run_in_process(short)
    assert first["rounds_trained"] == 2

    summary = run_in_process(load_run_config(short.run_dir, [f"rounds={ROUNDS}"]), resume=True)
    assert summary["rounds"] == summary["rounds_trained"] == ROUNDS
    final_ref, final_ext = (load_checkpoint(checkpoint_path(c.run_dir)) for c in (reference, short))
    assert final_ref.round == final_ext.round == ROUNDS
    for key, value in final_ref.global_state.items():
        assert np.array_equal(value, final_ext.global_state[key]), key  # as if started with the higher cap
    timing = sorted(TIMING_METRICS)
    rows = [pd.read_csv(c.run_dir / "rounds.csv").drop(columns=timing) for c in (reference, short)]
    pd.testing.assert_frame_equal(*rows)
    assert yaml.safe_load((short.run_dir / "config.resolved.yaml").read_text())["rounds"] == ROUNDS

    client = MlflowClient(study["tracking"]["uri"])
    run, ref_run = client.get_run(summary["run_id"]), client.get_run(final_ref.meta["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["rounds_extended"] == f"2 -> {ROUNDS}"
    assert run.data.tags["config_digest"] == ref_run.data.tags["config_digest"]  # one configuration now
    assert run.data.metrics["dice/mean_final"] == ref_run.data.metrics["dice/mean_final"]
    assert [m.step for m in client.get_metric_history(run.info.run_id, Metric.DICE_MEAN.value)] == list(range(1, ROUNDS + 1))


def test_resume_rounds_refuses_a_cap_that_would_change_trained_rounds(tmp_path, monkeypatch):
    import fedray.cli
    from fedray.config import save_config

    for schedule, rounds, accepted in (("constant", 6, True), ("constant", 1, False), ("poly", 6, False)):
        study = tiny_study(tmp_path, rounds=2)
        config = config_from_data({**study, "train": {**study["train"], "lr_schedule": schedule}})
        config.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, config.run_dir / "config.resolved.yaml")
        started = []
        monkeypatch.setattr(fedray.cli, "_run_config", lambda cfg, resume: started.append(cfg.rounds) or 0)
        code = fedray.cli.main(["resume", str(config.run_dir), "--rounds", str(rounds)])
        assert (code, started) == ((0, [rounds]) if accepted else (2, [])), (schedule, rounds)
