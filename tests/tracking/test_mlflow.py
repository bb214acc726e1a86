"""The driver's MLflow run: round metrics written in order by a background thread; a failed write is not lost."""

from __future__ import annotations

import math

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from fedray.tracking.mlflow import MlflowTracker


def _tracker(tmp_path) -> MlflowTracker:
    return MlflowTracker(f"sqlite:///{tmp_path}/mlflow.db", "tests", tmp_path / "artifacts")


def test_metrics_are_written_in_order_and_all_there_once_the_run_ends(tmp_path):
    tracker = _tracker(tmp_path)
    run_id = tracker.start("study", {"rounds": 20}, {"method": "fedavg"})
    for step in range(1, 21):
        tracker.log_metrics({"dice/mean": step / 100, "hd95/liver": math.nan}, step=step)
    assert tracker.last_step("dice/mean") == 20  # reading the run back waits for the queued writes
    tracker.end("FINISHED")

    client = MlflowClient(tracking_uri=tracker.uri)
    history = sorted(client.get_metric_history(run_id, "dice/mean"), key=lambda m: m.step)
    assert [(m.step, m.value) for m in history] == [(s, s / 100) for s in range(1, 21)]
    assert client.get_metric_history(run_id, "hd95/liver") == []  # NaN: not measured, not logged
    assert client.get_run(run_id).info.status == "FINISHED"


def test_a_failed_write_fails_a_finished_run_and_leaves_a_failing_run_its_own_error(tmp_path):
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    finished = _tracker(tmp_path)
    finished_id = finished.start("finished", {}, {})
    finished.log_metrics({"bad name!": 1.0}, step=1)  # MLflow refuses the name when the thread writes it
    with pytest.raises(MlflowException):
        finished.end("FINISHED")
    assert client.get_run(finished_id).info.status == "FINISHED"  # closed all the same

    failing = _tracker(tmp_path)
    failing_id = failing.start("failing", {}, {})
    failing.log_metrics({"bad name!": 1.0}, step=1)
    failing.end("FAILED")  # logged as a warning: the study's own error is the one to see
    assert client.get_run(failing_id).info.status == "FAILED"
