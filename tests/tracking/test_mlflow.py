"""The driver's MLflow run: round metrics written in order by a background thread; a failed write is not lost."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from fedray.tracking.mlflow import HEARTBEAT, KILLED_REASON, OWNER_HOST, OWNER_PID, MlflowTracker, owner_tags


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


def test_a_rounds_metrics_and_heartbeat_go_in_one_write(tmp_path, monkeypatch):
    tracker = _tracker(tmp_path)
    run_id = tracker.start("study", {}, {})
    before = time.time()
    writes = []
    log_batch = tracker.client.log_batch
    monkeypatch.setattr(tracker.client, "log_batch", lambda *a, **k: (writes.append(k), log_batch(*a, **k)))
    tracker.log_metrics({"dice/mean": 0.5, "hd95/liver": math.nan}, step=1, heartbeat=True)
    tracker.log_metrics({"hd95/liver": math.nan}, step=2)  # nothing finite, no heartbeat: no write at all
    tracker.flush()
    assert [(len(w["metrics"]), [t.key for t in w["tags"]]) for w in writes] == [(1, [HEARTBEAT])]
    run = MlflowClient(tracking_uri=tracker.uri).get_run(run_id)
    assert run.data.metrics == {"dice/mean": 0.5} and float(run.data.tags[HEARTBEAT]) >= before
    tracker.end("FINISHED")


def test_rounds_logged_between_writes_wait_and_go_in_one_write_by_themselves(tmp_path, monkeypatch):
    monkeypatch.setattr("fedray.tracking.mlflow.WRITE_EVERY_S", 0.5)
    tracker = _tracker(tmp_path)
    run_id = tracker.start("study", {}, {})
    writes = []
    log_batch = tracker.client.log_batch
    monkeypatch.setattr(tracker.client, "log_batch", lambda *a, **k: (writes.append(k), log_batch(*a, **k)))
    for step in range(1, 6):  # five quick rounds: the first is written at once, the other four wait
        tracker.log_metrics({"dice/mean": step / 10}, step=step, heartbeat=True)
    time.sleep(1.5)  # no flush: the waiting write goes when its time comes
    assert [[m.step for m in w["metrics"]] for w in writes] == [[1], [2, 3, 4, 5]]
    assert all([t.key for t in w["tags"]] == [HEARTBEAT] for w in writes)  # one heartbeat a write
    history = MlflowClient(tracking_uri=tracker.uri).get_metric_history(run_id, "dice/mean")
    assert sorted(m.step for m in history) == [1, 2, 3, 4, 5]
    monkeypatch.setattr("fedray.tracking.mlflow.WRITE_EVERY_S", 60.0)
    tracker.log_metrics({"dice/mean": 0.6}, step=6)  # due a minute after the last write...
    began = time.monotonic()
    tracker.flush()  # ... but a flush writes it now
    assert time.monotonic() - began < 30 and [[m.step for m in w["metrics"]] for w in writes[2:]] == [[6]]
    tracker.end("FINISHED")


def test_a_failed_metrics_write_still_sends_the_heartbeat(tmp_path, monkeypatch):
    tracker = _tracker(tmp_path)
    run_id = tracker.start("study", {}, {})
    log_batch = tracker.client.log_batch

    def locked_for_metrics(run, metrics=(), tags=()):
        if metrics:
            raise MlflowException("database is locked")
        log_batch(run, tags=tags)

    monkeypatch.setattr(tracker.client, "log_batch", locked_for_metrics)
    tracker.log_metrics({"dice/mean": 0.5}, step=1, heartbeat=True)
    with pytest.raises(MlflowException, match="locked"):
        tracker.flush()
    assert HEARTBEAT in MlflowClient(tracking_uri=tracker.uri).get_run(run_id).data.tags


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


OWNER_SCRIPT = """
import sys, time
from pathlib import Path
from fedray.tracking.mlflow import MlflowTracker, owner_tags
for name in ("victim", "resumed"):
    tracker = MlflowTracker(sys.argv[1], "tests", Path(sys.argv[2]))
    print(tracker.start(name, {}, owner_tags()), flush=True)
time.sleep(600)
"""


def test_runs_left_running_by_a_killed_process_are_marked_by_the_next_study_and_on_resume(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    owner = subprocess.Popen([sys.executable, "-c", OWNER_SCRIPT, uri, str(tmp_path / "artifacts")],
                             stdout=subprocess.PIPE, text=True)
    victim, resumed = owner.stdout.readline().strip(), owner.stdout.readline().strip()
    owner.kill()  # SIGKILL: nothing closes its runs
    owner.wait()
    client = MlflowClient(tracking_uri=uri)
    assert client.get_run(victim).info.status == "RUNNING"

    alive = _tracker(tmp_path)
    alive_id = alive.start("alive", {}, owner_tags())  # this process: alive
    old = time.time() - 7200
    elsewhere = {OWNER_HOST: "another-host", OWNER_PID: "1", HEARTBEAT: repr(old)}
    stale_id = _tracker(tmp_path).start("stale", {}, elsewhere)
    recent_id = _tracker(tmp_path).start("recent", {}, {**elsewhere, HEARTBEAT: repr(time.time())})

    study = _tracker(tmp_path)
    study.start("next", {}, owner_tags())
    marked = study.mark_abandoned(stale_after_s=3600)
    assert set(marked) == {victim, resumed, stale_id}
    assert "is gone" in marked[victim] and "for 7" in marked[stale_id] and "stale_after_s = 3600" in marked[stale_id]
    for run_id in (victim, stale_id):
        run = client.get_run(run_id)
        assert run.info.status == "KILLED" and run.data.tags[KILLED_REASON].startswith(marked[run_id])
    assert {client.get_run(r).info.status for r in (alive_id, recent_id)} == {"RUNNING"}
    assert study.mark_abandoned(stale_after_s=0) == {}  # 0: the foreign run is never judged by its heartbeat

    client.update_run(resumed, status="RUNNING")  # as a hard kill leaves it, and resumed before any study found it
    again = _tracker(tmp_path)
    reason = again.reopen(resumed)
    run = client.get_run(resumed)
    assert "is gone" in reason and run.data.tags[KILLED_REASON].endswith("found when it was resumed")
    assert run.info.status == "RUNNING" and run.data.tags[OWNER_PID] == str(os.getpid())
    again.heartbeat()
    again.end("FINISHED")
    assert float(client.get_run(resumed).data.tags[HEARTBEAT]) >= float(run.data.tags[HEARTBEAT])
