"""MLflow tracking for the driver: one run per study, metrics with step = round."""

from __future__ import annotations

import logging
import math
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from fedray.config import flatten
from fedray.configtypes import to_data
from fedray.messages import Metric as StudyMetric
from fedray.tracking.callbacks import Callback, RunContext

log = logging.getLogger(__name__)

_PARAM_LIMIT = 6000  # MLflow's maximum length of a param value
_BATCH_LIMIT = 100  # params/tags per log_batch call


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
    run back) waits for them and re-raises a write that failed.
    """

    def __init__(self, uri: str, experiment: str, artifact_root: Path) -> None:
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlflow-metrics")
        self._pending: list[Future] = []
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

    def reopen(self, run_id: str) -> None:
        """Continue an existing run (a resumed study) and mark it RUNNING again."""
        self.run_id = run_id
        self.client.update_run(run_id, status="RUNNING")

    def last_step(self, metric: str) -> int:
        """Highest step logged for `metric` in this run (0 if none)."""
        self.flush()
        return max((m.step for m in self.client.get_metric_history(self.run_id, metric)), default=0)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Queue finite values at `step` for writing (NaN means 'not measured this round' and is skipped)."""
        timestamp = int(mlflow.utils.time.get_current_time_millis())
        batch = [Metric(k, float(v), timestamp, step) for k, v in metrics.items() if math.isfinite(v)]
        self._pending = [f for f in self._pending if not f.done() or f.exception() is not None]
        self._pending.append(self._writer.submit(self._write, self.run_id, batch))

    def _write(self, run_id: str, batch: list[Metric]) -> None:
        for i in range(0, len(batch), 1000):
            self.client.log_batch(run_id, metrics=batch[i : i + 1000])

    def flush(self) -> None:
        """Wait until every queued metric is written; raises the first write that failed."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

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
        return found[0].info.run_id
    return tracker.start(name, {}, {"role": "sweep", "sweep": name})


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

    def on_run_start(self, run: RunContext) -> None:
        cfg = run.config
        self.tracker = tracker = MlflowTracker(
            cfg.tracking.uri or default_tracking_uri(cfg.tracking.results_dir),
            cfg.tracking.experiment,
            Path(cfg.tracking.results_dir) / "mlartifacts",
        )
        if run.resumed is None:
            run.run_id = tracker.start(cfg.run_name, flatten(to_data(cfg)), run.tags)
            tracker.log_artifact(cfg.run_dir / "data_manifest.json")
            return
        tracker.reopen(run.resumed.meta["run_id"])
        run.run_id = tracker.run_id
        logged = tracker.last_step(StudyMetric.BYTES_TOTAL.value)  # always finite, so logged every round
        for row in run.rows:
            if row["round"] > logged:
                tracker.log_metrics(_logged(row), step=row["round"])
        self.logged_through = max(logged, len(run.rows))

    def on_round_end(self, run: RunContext, row: dict[str, Any]) -> None:
        if row["round"] > self.logged_through:
            self.tracker.log_metrics(_logged(row), step=row["round"])

    def on_run_end(self, run: RunContext, status: str, summary: dict[str, Any] | None) -> None:
        if self.tracker is None:
            return
        already = run.resumed is not None and self.tracker.client.get_metric_history(self.tracker.run_id, "params_total")
        if summary is not None and not already:  # a finished study resumed again logs them once only
            self.tracker.log_metrics(
                {k: summary[k] for k in ("dice/mean_untrained", "params_total", "comm/bytes_preparation")}, step=0
            )
            plateau = summary.get("rounds_to_plateau")  # NaN (so not logged) when never reached
            self.tracker.log_metrics(
                {
                    "plateaued": float(plateau is not None),
                    "rounds_to_plateau": math.nan if plateau is None else float(plateau),
                    "dice/mean_best": summary.get("dice/mean_best", math.nan),
                    "dice/mean_final": summary.get("dice/mean_final", math.nan),
                },
                step=0,
            )
            for name in ("config.resolved.yaml", "rounds.csv", "hospitals.csv", "cases.csv", "summary.json"):
                if (run.config.run_dir / name).is_file():
                    self.tracker.log_artifact(run.config.run_dir / name)
        self.tracker.end(status)


def _logged(row: dict) -> dict[str, float]:
    """A rounds.csv row as MLflow metrics (without the round and client count)."""
    return {k: v for k, v in row.items() if k not in ("round", "clients")}
