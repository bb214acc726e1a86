"""MLflow tracking for the driver: one run per study, metrics with step = round."""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from fedray.config import flatten
from fedray.configtypes import to_data
from fedray.messages import Metric as StudyMetric
from fedray.messages import summary_metrics
from fedray.tracking.callbacks import Callback, RunContext
from fedray.tracking.provenance import platforms_label

log = logging.getLogger(__name__)

_PARAM_LIMIT = 6000  # MLflow's maximum length of a param value
_BATCH_LIMIT = 100  # params/tags per log_batch call
WRITE_EVERY_S = 2.0  # round metrics logged within this time of the last write wait for one write (MlflowTracker)

# Who owns a RUNNING run, so that a later study can tell a run left RUNNING by a hard kill (SIGKILL,
# out of memory, a lost node) from one still going: the owner's host, pid and process start time
# (a reused pid has another start time), and the time of its last completed round.
OWNER_HOST, OWNER_PID, OWNER_STARTED = "fedray.owner_host", "fedray.owner_pid", "fedray.owner_started"
HEARTBEAT = "fedray.heartbeat"  # Unix time of the owner's last sign of life (run start, each round)
PLATFORMS_TAG = "compute_platforms"  # provenance.platforms_label: a seed reproduces only on the same
RECREATED_FROM = "fedray.recreated_from"  # the run id a resumed study had in the store it was carried from
KILLED_REASON = "fedray.killed_reason"  # why fedray marked a run KILLED that its owner left RUNNING


def owner_tags() -> dict[str, str]:
    """This process as the owner of a run, with a heartbeat of now."""
    import psutil

    return {
        OWNER_HOST: socket.gethostname(),
        OWNER_PID: str(os.getpid()),
        OWNER_STARTED: repr(psutil.Process().create_time()),
        HEARTBEAT: repr(time.time()),
    }


def abandoned_because(tags: dict[str, str], start_time_ms: int, stale_after_s: float, now: float) -> str | None:
    """Why a RUNNING run's owner is known to be gone, or None while it may be alive.

    On the owner's own host, the owner's process is checked (gone, or its pid reused by another
    process): that answer is final. Elsewhere (or for a run without owner tags) only the heartbeat
    tells: no sign of life for `stale_after_s` seconds (0: never judged so).
    """
    import psutil

    host, pid = tags.get(OWNER_HOST), tags.get(OWNER_PID)
    if host == socket.gethostname() and pid is not None:
        try:
            started = psutil.Process(int(pid)).create_time()
        except psutil.NoSuchProcess:
            return f"its driver process {pid} on {host} is gone"
        if OWNER_STARTED in tags and abs(started - float(tags[OWNER_STARTED])) > 1.0:
            return f"its driver process {pid} on {host} is gone (the pid now belongs to another process)"
        return None
    if tags.get("role") == "sweep" or not stale_after_s:  # a sweep's run beats only through its cells
        return None
    last = float(tags.get(HEARTBEAT, start_time_ms / 1000))
    if now - last > stale_after_s:
        where = f" on {host}" if host else ""
        return f"no sign of life from its driver{where} for {now - last:.0f} s (tracking.stale_after_s = {stale_after_s:g})"
    return None


def default_tracking_uri(results_dir: str | Path) -> str:
    """MLFLOW_TRACKING_URI if set, else SQLite at <results_dir>/mlflow.db (MLflow 3 refuses file stores)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{(Path(results_dir) / 'mlflow.db').resolve()}"


class MlflowTracker:
    """Writes one study's MLflow run. Only the driver creates one.

    Round metrics are written by one background thread, in the order they were logged, so the next
    round starts without waiting for the database; `flush` (called by `end` and before reading the
    run back) waits for them and re-raises a write that failed. Rounds logged within WRITE_EVERY_S
    of the last write wait and go in one write: a log_batch costs the driver 6-14 ms of CPU whatever
    its size (measured: at 10 hospitals a round on 2 cores, a write per round was a third of the
    driver's CPU, taken from the hospital actors), and a run read mid-study is at most that late.
    """

    def __init__(self, uri: str, experiment: str, artifact_root: Path) -> None:
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlflow-metrics")
        self._pending: list[Future] = []
        self._lock = threading.Lock()
        self._waiting: list[Metric] = []  # logged, not yet handed to a write
        self._beat = False  # a heartbeat is due with the waiting metrics
        self._write_queued = False  # a write of the waiting metrics is queued (it takes those logged until it runs)
        self._last_write = -math.inf  # time.monotonic() the last queued write is due at
        self._write_now = threading.Event()  # set by flush: a queued write stops waiting
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            artifact_root.mkdir(parents=True, exist_ok=True)
            self.experiment_id = self.client.create_experiment(
                experiment, artifact_location=artifact_root.resolve().as_uri()
            )
        else:
            self.experiment_id = found.experiment_id
        self.run_id: str | None = None

    def start(self, run_name: str, params: dict[str, Any], tags: dict[str, str]) -> str:
        """Open the run and record params and tags; returns the run id."""
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
        self.run_id = run.info.run_id
        items = [Param(k, str(v)[:_PARAM_LIMIT]) for k, v in params.items()]
        for i in range(0, len(items), _BATCH_LIMIT):
            self.client.log_batch(self.run_id, params=items[i : i + _BATCH_LIMIT])
        return self.run_id

    def holds(self, run_id: str) -> bool:
        """Whether this store has the run (a study carried from another machine's store has not)."""
        try:
            self.client.get_run(run_id)
        except MlflowException as error:
            if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            return False
        return True

    def reopen(self, run_id: str) -> str | None:
        """Continue an existing run (a resumed study) and mark it RUNNING again, owned by this process.

        Returns why the run was found still RUNNING with its owner gone (a hard kill; then tagged
        KILLED_REASON), None otherwise.
        """
        self.run_id = run_id
        found = self.client.get_run(run_id)
        reason = None
        if found.info.status == "RUNNING":
            reason = abandoned_because(found.data.tags, found.info.start_time, math.inf, time.time())
            if reason is not None:
                self.client.set_tag(run_id, KILLED_REASON, f"{reason}; found when it was resumed")
        self.client.update_run(run_id, status="RUNNING")
        self._set_tags(owner_tags())
        return reason

    def mark_abandoned(self, stale_after_s: float) -> dict[str, str]:
        """Mark KILLED the experiment's other RUNNING runs whose owner is gone (`abandoned_because`),
        each tagged KILLED_REASON; returns {run id: reason}."""
        marked, now = {}, time.time()
        for run in self.client.search_runs([self.experiment_id], filter_string="attributes.status = 'RUNNING'"):
            if run.info.run_id == self.run_id:
                continue
            reason = abandoned_because(run.data.tags, run.info.start_time, stale_after_s, now)
            if reason is not None:
                self.client.set_tag(run.info.run_id, KILLED_REASON, f"{reason}; found by run {self.run_id}")
                self.client.set_terminated(run.info.run_id, status="KILLED")
                log.warning("marked MLflow run %s (%s) KILLED: %s", run.info.run_id, run.info.run_name, reason)
                marked[run.info.run_id] = reason
        return marked

    def heartbeat(self) -> None:
        """Queue this run's sign of life (with the metrics waiting, or alone)."""
        self._log([], heartbeat=True)

    def set_tags(self, tags: dict[str, str]) -> None:
        """Set (or overwrite) the run's tags."""
        self._set_tags(tags)

    def _set_tags(self, tags: dict[str, str]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])

    def last_step(self, metric: str) -> int:
        """Highest step logged for `metric` in this run (0 if none)."""
        self.flush()
        return max((m.step for m in self.client.get_metric_history(self.run_id, metric)), default=0)

    def log_metrics(self, metrics: dict[str, float], step: int, heartbeat: bool = False) -> None:
        """Queue finite values at `step` for writing (NaN means 'not measured this round' and is skipped);
        with `heartbeat`, the run's sign of life goes in the same write (one SQLite transaction, not two)."""
        timestamp = int(mlflow.utils.time.get_current_time_millis())
        self._log([Metric(k, float(v), timestamp, step) for k, v in metrics.items() if math.isfinite(v)], heartbeat)

    def _log(self, batch: list[Metric], heartbeat: bool) -> None:
        """Add to what waits for the next write; queue that write unless one is queued already."""
        if not batch and not heartbeat:
            return
        with self._lock:
            self._waiting.extend(batch)
            self._beat |= heartbeat
            if self._write_queued:
                return
            self._write_queued = True
        delay = self._last_write + WRITE_EVERY_S - time.monotonic()
        self._last_write = max(self._last_write + WRITE_EVERY_S, time.monotonic())
        self._pending = [f for f in self._pending if not f.done() or f.exception() is not None]
        self._pending.append(self._writer.submit(self._write_waiting, delay))

    def _write_waiting(self, delay_s: float) -> None:
        """(The writer thread) after `delay_s` (or at once on flush), write every metric waiting."""
        if delay_s > 0:
            self._write_now.wait(delay_s)
        with self._lock:
            batch, beat = self._waiting, self._beat
            self._waiting, self._beat, self._write_queued = [], False, False
        self._write(self.run_id, batch, _heartbeat_tags() if beat else [])

    def _write(self, run_id: str, batch: list[Metric], tags: list[RunTag] | None = None) -> None:
        if not batch and not tags:
            return
        try:
            for i in range(0, max(len(batch), 1), 1000):  # MLflow takes at most 1,000 metrics a batch
                self.client.log_batch(run_id, metrics=batch[i : i + 1000], tags=(tags or []) if i == 0 else [])
        except Exception:
            if tags:  # the heartbeat alone, so a failed metrics write does not make a live run look stale
                self.client.log_batch(run_id, tags=tags)
            raise

    def flush(self) -> None:
        """Write every queued metric now and wait for it; raises the first write that failed."""
        pending, self._pending = self._pending, []
        self._write_now.set()
        try:
            for future in pending:
                future.result()
        finally:
            self._write_now.clear()

    def log_artifact(self, path: Path) -> None:
        """Copy a file into the run's artifacts."""
        self.client.log_artifact(self.run_id, str(path))

    def end(self, status: str) -> None:
        """Write what is queued, then close the run as FINISHED, FAILED or KILLED.

        A failed metric write fails a FINISHED run; a run already ending in failure keeps its own error.
        """
        try:
            self.flush()
        except Exception:
            if status == "FINISHED":
                raise
            log.warning("MLflow could not record some metrics of run %s", self.run_id, exc_info=True)
        finally:
            self._writer.shutdown()
            if self.run_id is not None:
                self.client.set_terminated(self.run_id, status=status)


def open_parent_run(uri: str, experiment: str, artifact_root: Path, name: str) -> str:
    """The sweep's parent run: found again by name on resume, else created (tagged role=sweep)."""
    tracker = MlflowTracker(uri, experiment, artifact_root)
    found = tracker.client.search_runs(
        [tracker.experiment_id],
        filter_string=f"tags.role = 'sweep' and attributes.run_name = '{name}'",
        max_results=1,
    )
    if found:
        tracker.reopen(found[0].info.run_id)  # RUNNING again, owned by this process (its cells check owners)
        return found[0].info.run_id
    return tracker.start(name, {}, {"role": "sweep", "sweep": name, **owner_tags()})


def close_run(uri: str, run_id: str, status: str) -> None:
    """Mark a run FINISHED, FAILED or KILLED."""
    MlflowClient(tracking_uri=uri).set_terminated(run_id, status=status)


class MlflowCallback(Callback):
    """The study's MLflow run: opened (or reopened on resume) at the start, one step per round, closed
    with the study's status. Round metrics already in MLflow (a resumed run redoes rounds after its
    checkpoint) are not logged twice."""

    def __init__(self) -> None:
        self.tracker: MlflowTracker | None = None
        self.logged_through = 0  # rounds MLflow already holds
        self.extended = False  # a resumed study whose rounds cap was raised

    def on_run_start(self, run: RunContext) -> None:
        cfg = run.config
        self.tracker = tracker = MlflowTracker(
            cfg.tracking.uri or default_tracking_uri(cfg.tracking.results_dir),
            cfg.tracking.experiment,
            Path(cfg.tracking.results_dir) / "mlartifacts",
        )
        if run.resumed is None:
            self._start(run)
            return
        started_id = run.resumed.meta["run_id"]
        if not tracker.holds(started_id):
            # The run folder came without its store (another machine, a sweep carried between sessions):
            # a new run, into which the rounds the checkpoint holds are logged again below.
            log.warning("MLflow run %s of %s is not in %s: resuming into a new run", started_id, cfg.run_name, tracker.uri)
            self._start(run, {RECREATED_FROM: started_id})
        else:
            tracker.reopen(started_id)
        run.run_id = tracker.run_id
        started_rounds = tracker.client.get_run(run.run_id).data.params.get("rounds")
        self.extended = started_rounds is not None and started_rounds != str(cfg.rounds)
        if self.extended:  # params cannot change in MLflow: the first cap stays a param, the new one a tag
            run.tags["rounds_extended"] = f"{started_rounds} -> {cfg.rounds}"
        tracker.set_tags(run.tags)  # the config digest, which a raised cap changes
        tracker.mark_abandoned(cfg.tracking.stale_after_s)
        logged = tracker.last_step(StudyMetric.BYTES_TOTAL.value)  # always finite, so logged every round
        for row in run.rows:
            if row["round"] > logged:
                tracker.log_metrics(_logged(row), step=row["round"])
        self.logged_through = max(logged, len(run.rows))

    def _start(self, run: RunContext, tags: dict[str, str] | None = None) -> None:
        cfg, tracker = run.config, self.tracker
        run.run_id = tracker.start(cfg.run_name, flatten(to_data(cfg)), {**run.tags, **owner_tags(), **(tags or {})})
        tracker.log_artifact(cfg.run_dir / "data_manifest.json")
        tracker.mark_abandoned(cfg.tracking.stale_after_s)

    def on_round_end(self, run: RunContext, row: dict[str, Any]) -> None:
        if row["round"] > self.logged_through:
            self.tracker.log_metrics(_logged(row), step=row["round"], heartbeat=True)
        else:
            self.tracker.heartbeat()

    def on_run_end(self, run: RunContext, status: str, summary: dict[str, Any] | None) -> None:
        if self.tracker is None:
            return
        already = run.resumed is not None and self.tracker.client.get_metric_history(self.tracker.run_id, "params_total")
        if summary is not None and (self.extended or not already):  # a finished study resumed again logs them once only
            self.tracker.log_metrics(summary_metrics(summary), step=0)
            for name in ("config.resolved.yaml", "rounds.csv", "hospitals.csv", "cases.csv", "summary.json"):
                if (run.config.run_dir / name).is_file():
                    self.tracker.log_artifact(run.config.run_dir / name)
        if summary is not None and summary.get("platforms"):  # a tag can change: every session that ends says it
            self.tracker.set_tags({PLATFORMS_TAG: platforms_label(summary["platforms"])})
        self.tracker.end(status)


def _heartbeat_tags() -> list[RunTag]:
    """The run's sign of life: the owner's Unix time now (HEARTBEAT)."""
    return [RunTag(HEARTBEAT, repr(time.time()))]


def _logged(row: dict) -> dict[str, float]:
    """A rounds.csv row as MLflow metrics (without the round and client count)."""
    return {k: v for k, v in row.items() if k not in ("round", "clients")}
