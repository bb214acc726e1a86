"""Parallel sweeps: each cell's share of the cluster, at most N cells at once, failures and Ctrl-C
(without Ray, then Ctrl-C of a real `fedray sweep --parallel 2`); and concurrent MLflow writers on
one SQLite store (what parallel Driver actors do)."""

from __future__ import annotations

import multiprocessing
import signal
import subprocess
import threading
import time

import pytest
import yaml
from mlflow.tracking import MlflowClient

from fedray.config import config_from_data
from fedray.errors import ConfigError, FedrayError
from fedray.experiments.sweep import Cell, SweepConfig, Variant, cell_share, load_sweep, run_sweep
from fedray.tracking.checkpoint import checkpoint_path, load_checkpoint
from tests.conftest import start_cli, tiny_study


def study(tmp_path, **resources):
    return config_from_data(tiny_study(tmp_path, resources=resources))


def test_share_is_the_clusters_cpus_and_gpus_over_parallel(tmp_path):
    cpus = study(tmp_path, cpus_per_actor=0.5)
    assert cell_share(cpus, {"CPU": 2.0}, 2).resources.actors == 2
    assert cell_share(cpus, {"CPU": 16.0}, 3).resources.actors == 10  # floor(16 / 3 / 0.5)
    gpus = study(tmp_path, cpus_per_actor=1, gpus_per_actor=0.25)
    assert cell_share(gpus, {"CPU": 16.0, "GPU": 2.0}, 2).resources.actors == 4  # GPUs bind first
    assert cell_share(gpus, {"CPU": 2.0, "GPU": 8.0}, 2).resources.actors == 1  # then CPUs


def test_share_leaves_explicit_actors_and_a_lone_cell_alone(tmp_path):
    assert cell_share(study(tmp_path, actors=3), {"CPU": 2.0}, 2).resources.actors == 3
    assert cell_share(study(tmp_path), {"CPU": 2.0}, 1).resources.actors is None  # as many as fit


def test_share_keeps_hospital_overrides_and_at_least_one_actor(tmp_path, caplog):
    dedicated = study(tmp_path, cpus_per_actor=1, hospitals={"a": {"cpus": 2}})
    assert cell_share(dedicated, {"CPU": 8.0}, 2).resources.actors == 2  # 4 CPUs a cell, 2 for hospital a
    assert cell_share(study(tmp_path, cpus_per_actor=2), {"CPU": 2.0}, 4).resources.actors == 1
    assert "may wait for each other" in caplog.text


def test_parallel_is_validated_and_defaults_to_one(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "study": "x.yaml", "variants": [{"label": "a"}]}))
    assert load_sweep(path).parallel == 1
    path.write_text(yaml.safe_dump({"name": "s", "study": "x.yaml", "variants": [{"label": "a"}], "parallel": 0}))
    with pytest.raises(ConfigError, match="parallel must be >= 1"):
        load_sweep(path)
    path.write_text(yaml.safe_dump({"name": "s", "study": "x.yaml", "variants": [{"label": "a"}], "paralel": 2}))
    with pytest.raises(ConfigError, match="parallel"):  # did-you-mean
        load_sweep(path)


def fake_cells(tmp_path, n: int) -> tuple[SweepConfig, list[Cell]]:
    cells = []
    for i in range(n):
        config = config_from_data(tiny_study(tmp_path, tracking={"results_dir": str(tmp_path), "run_name": f"cell{i}"}))
        cells.append(Cell(f"cell{i}", config))
    sweep = SweepConfig(name="fake", study="x.yaml", variants=(Variant("a"),), seeds=tuple(range(n)))
    return sweep, cells


def test_at_most_parallel_cells_run_at_once_and_a_failure_stops_none(tmp_path):
    sweep, cells = fake_cells(tmp_path, 5)
    (cells[4].config.run_dir).mkdir(parents=True)
    (cells[4].config.run_dir / "summary.json").write_text("{}")
    lock = threading.Lock()
    running, peak, seen = [0], [0], []

    def run_cell(config, resume, stop):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            seen.append(config.tracking.parent_run_id)
        time.sleep(0.3)
        with lock:
            running[0] -= 1
        if config.run_name == "cell1":
            raise FedrayError("no GPU")
        if config.run_name == "cell2":
            raise RuntimeError("bug")
        return {}

    status = run_sweep(sweep, cells, run_cell, lambda name: "parent-id", parallel=2)
    assert peak[0] == 2 and seen == ["parent-id"] * 4
    assert status == {
        "cell0": "done",
        "cell1": "failed: no GPU",
        "cell2": "failed: RuntimeError: bug",
        "cell3": "done",
        "cell4": "skipped (finished before)",
    }


def test_ctrl_c_stops_every_running_cell_and_starts_no_more(tmp_path, ctrl_c_handler):
    sweep, cells = fake_cells(tmp_path, 4)
    started, stopped = [], []
    both_running = threading.Barrier(3)

    def run_cell(config, resume, stop):  # like run_study: runs until asked to stop
        started.append(config.run_name)
        both_running.wait(timeout=10)
        assert stop.wait(timeout=10)
        stopped.append(config.run_name)
        raise KeyboardInterrupt

    def ctrl_c():
        both_running.wait(timeout=10)
        # What Ctrl-C does: a real SIGINT to the main thread (interrupt_main only sets a flag, which a
        # main thread blocked waiting on the cells would not see until it woke up).
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    threading.Thread(target=ctrl_c).start()
    with pytest.raises(KeyboardInterrupt):
        run_sweep(sweep, cells, run_cell, lambda name: "parent-id", parallel=2)
    assert sorted(started) == sorted(stopped) == ["cell0", "cell1"]  # run_sweep returned after both stopped



def test_ctrl_c_inside_submit_still_waits_for_the_cell_it_started(tmp_path, monkeypatch):
    """Ctrl-C can land in pool.submit after the cell's thread started but before submit returned the
    future or the pool recorded the thread (CPython adds it to the pool's set after Thread.start);
    run_sweep must still return only after that cell stopped. Modelled: the second submit raises once
    its cell runs, and the pool's shutdown does not join (the thread it never recorded)."""
    import fedray.experiments.sweep as sweep_module

    sweep, cells = fake_cells(tmp_path, 4)
    started, stopped = [], []
    second_running = threading.Event()

    class InterruptedPool(sweep_module.ThreadPoolExecutor):
        submits = 0

        def submit(self, fn, *args):
            future = super().submit(fn, *args)
            InterruptedPool.submits += 1
            if InterruptedPool.submits == 2:
                assert second_running.wait(timeout=10)
                raise KeyboardInterrupt  # before the caller holds the future
            return future

        def shutdown(self, wait=True, **kwargs):
            super().shutdown(wait=False, **kwargs)

    def run_cell(config, resume, stop):
        started.append(config.run_name)
        if config.run_name == "cell1":
            second_running.set()
        assert stop.wait(timeout=10)
        time.sleep(0.2)  # a round's end and checkpoint
        stopped.append(config.run_name)
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep_module, "ThreadPoolExecutor", InterruptedPool)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(sweep, cells, run_cell, lambda name: "parent-id", parallel=2)
    assert sorted(started) == sorted(stopped) == ["cell0", "cell1"]


def _log_many(uri: str, experiment: str, artifacts: str, name: str, rounds: int, errors: str) -> None:
    import traceback
    from pathlib import Path

    from fedray.tracking.mlflow import MlflowTracker

    try:
        tracker = MlflowTracker(uri, experiment, Path(artifacts))
        tracker.start(name, {f"p{i}": i for i in range(150)}, {"role": "study"})
        for step in range(1, rounds + 1):
            tracker.log_metrics({f"m{i}": float(step * i) for i in range(60)}, step)
            tracker.last_step("m0")  # a resumed driver reads while others write
        tracker.end("FINISHED")
    except BaseException:
        Path(errors).write_text(traceback.format_exc())  # for the test's message: a child's stderr is lost
        raise


def test_concurrent_writers_share_one_sqlite_store(tmp_path):
    """Two processes logging at once, like two Driver actors of a parallel sweep: no 'database is
    locked' (MLflow sets busy_timeout 20 s on SQLite), every value stored once."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    MlflowClient(uri).create_experiment("e", artifact_location=(tmp_path / "art").as_uri())  # as the sweep's parent
    spawn = multiprocessing.get_context("spawn")
    rounds = 60
    errors = [tmp_path / f"w{i}.error" for i in range(2)]
    writers = [
        spawn.Process(target=_log_many, args=(uri, "e", str(tmp_path / "art"), f"w{i}", rounds, str(errors[i])))
        for i in range(2)
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=120)
    assert [w.exitcode for w in writers] == [0, 0], [e.read_text() for e in errors if e.exists()]
    client = MlflowClient(uri)
    for run in client.search_runs([client.get_experiment_by_name("e").experiment_id]):
        assert run.info.status == "FINISHED" and len(run.data.params) == 150
        history = client.get_metric_history(run.info.run_id, "m7")
        assert sorted((m.step, m.value) for m in history) == [(s, 7.0 * s) for s in range(1, rounds + 1)]


@pytest.mark.ray
@pytest.mark.slow  # 30-40 s each; a study's own Ctrl-C/SIGTERM stop stays in the default run (test_resume.py)
@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_stops_a_real_parallel_sweep_after_checkpoints(tmp_path, stop_signal):
    study = tiny_study(tmp_path, rounds=30)
    study["resources"] = {**study["resources"], "num_cpus": 2}  # the sweep's private Ray
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    sweep = {"name": "halt", "study": str(tmp_path / "study.yaml"), "variants": [{"label": "a"}],
             "seeds": [0, 1, 2], "overrides": ["train.local_steps=1", "eval.every=10"]}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    results = tmp_path / "results"
    process = start_cli("sweep", str(tmp_path / "sweep.yaml"), "--parallel", "2", stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    running = [results / f"halt__a__s{seed}" for seed in (0, 1)]
    while not all(checkpoint_path(d).is_file() for d in running):
        assert process.poll() is None and time.monotonic() < deadline, "no checkpoints appeared"
        time.sleep(0.2)
    process.send_signal(stop_signal)  # what Ctrl-C sends, or a job scheduler (SIGTERM: Ray's own handler would exit at once)
    _, stderr = process.communicate(timeout=240)
    assert process.returncode == 130
    assert "fedray sweep" in " ".join(stderr.split())

    client = MlflowClient(study["tracking"]["uri"])
    runs = client.search_runs([client.get_experiment_by_name("halt").experiment_id])
    assert {r.data.tags["role"]: r.info.status for r in runs if r.data.tags["role"] == "sweep"} == {"sweep": "KILLED"}
    for run_dir in running:  # both running cells stopped after a checkpoint, marked KILLED
        stopped = load_checkpoint(checkpoint_path(run_dir))
        assert stopped.round < 30
        assert client.get_run(stopped.meta["run_id"]).info.status == "KILLED"
    assert not (results / "halt__a__s2").exists()  # the queued cell never started
    assert len(runs) == 3
