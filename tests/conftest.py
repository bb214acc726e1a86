"""Shared fixtures: a private local Ray instance and tiny study configs on a real NIfTI phantom."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def tiny_study(tmp_path, **overrides) -> dict:
    """A 3-hospital phantom study small enough for seconds on 2 CPU cores."""
    study = {
        "name": "tiny",
        "seed": 0,
        "rounds": 2,
        "data": {
            "cache_dir": str(tmp_path / "data"),
            "phantom": {"shape": [32, 32, 32], "spacing": [12.0, 10.0, 7.5], "test_cases": 2},
            "patch_size": [16, 16, 16],
        },
        "federation": {
            "hospitals": [
                {"name": "a", "organs": ["liver", "spleen", "kidney_left"], "cases": 2},
                {"name": "b", "organs": ["kidney_right", "pancreas"], "cases": 3},
                {"name": "c", "organs": ["stomach", "gallbladder", "liver"], "cases": 2},
            ]
        },
        "model": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0},
        "train": {"local_steps": 2, "batch_size": 1},
        "eval": {"roi_size": [16, 16, 16], "sw_batch_size": 2},
        # Two actors for three hospitals: one of them serves two, and a study starts one process fewer
        # (each imports torch and MONAI: about a second of CPU per study, over some fifty studies).
        "resources": {"cpus_per_actor": 0.5, "actors": 2},
        "tracking": {"results_dir": str(tmp_path / "results"), "uri": f"sqlite:///{tmp_path}/results/mlflow.db"},
    }
    for key, value in overrides.items():
        study[key] = value
    return study


@pytest.fixture(scope="session")
def _ray_session():
    """Shuts down, at the session's end, the Ray instance `ray_local` keeps for the session's modules."""
    import ray

    yield ray
    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture(scope="module")
def ray_local(_ray_session):
    """A private local Ray instance (never attaches to another one), shared by the modules that ask for it.

    Started once, not once a module: a start and a shutdown cost seconds each, for about twenty
    modules. Each study kills its own actors and placement group, so a module finds the instance as
    the previous one left it; one that leaves something behind (a failed study) shuts the instance
    down at its end, and so does a fixture that needs another instance
    (tests/simulation/test_cluster.py); the next module that asks starts a fresh one.
    """
    ray = _ray_session
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if ray.is_initialized() and _holds_resources(ray):
        ray.shutdown()  # a failed study left actors or a placement group: they go with this instance


def _holds_resources(ray) -> bool:
    """Whether a placement group is still alive or some CPU is still taken (by a study's leftovers)."""
    placement_groups = ray.util.placement_group_table().values()
    return any(pg["state"] != "REMOVED" for pg in placement_groups) or (
        ray.available_resources().get("CPU", 0) < ray.cluster_resources().get("CPU", 0)
    )


def sigint_is_ctrl_c() -> None:
    """`preexec_fn` for a CLI subprocess a test interrupts with SIGINT.

    A job started in the background by a non-interactive shell (`nohup bash .ci/run &`) inherits
    SIGINT ignored, and Python then never turns SIGINT into KeyboardInterrupt; restore the default so
    the signal means Ctrl-C, as it does at a terminal.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def ctrl_c_handler():
    """Python's own SIGINT handler in this process for one test (see `sigint_is_ctrl_c`)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def start_cli(*args: str, stderr=subprocess.DEVNULL) -> subprocess.Popen:
    """`fedray ARGS...` in its own process group (a test may kill the group), SIGINT meaning Ctrl-C."""
    return subprocess.Popen(
        [sys.executable, "-m", "fedray.cli", *args],
        stdout=subprocess.DEVNULL, stderr=stderr, text=True, start_new_session=True, preexec_fn=sigint_is_ctrl_c,
    )


def kill_when(process: subprocess.Popen, run_dir, ready, timeout_s: float = 240, poll_s: float = 0.02):
    """SIGKILL `process`'s whole group (the CLI, its Ray and every actor) once its checkpoint satisfies
    `ready(checkpoint)`; returns the checkpoint it was killed at. Fails if the study ends first.

    Polled often: a tiny study's round takes tens of milliseconds (the next one trains while a round
    is recorded), so at 0.1 s its last two rounds could end between two looks."""
    import time

    from fedray.tracking.checkpoint import checkpoint_path, load_checkpoint

    path = checkpoint_path(run_dir)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if path.is_file() and ready(load_checkpoint(path)):
                break
        except (OSError, ValueError):
            pass  # read while it was being replaced
        assert process.poll() is None, "the study ended before it could be killed"
        time.sleep(poll_s)
    else:
        pytest.fail(f"no checkpoint of the awaited kind within {timeout_s:.0f} s")
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return load_checkpoint(path)


TINY_MULTIHEAD = {"name": "multihead_unet", "output": "sigmoid", "channels": [4, 8, 16], "norm_groups": 2}


def train_tiny_study(tmp_path, name: str, tracking_extra=None, callbacks=(), **overrides):
    """Run `tiny_study(tmp_path, **overrides)` named `name` in-process (Ray must be up: `ray_local`);
    returns (config, test folder, summary)."""
    from fedray.config import config_from_data, with_absolute_paths
    from fedray.data.federation import prepare_hospitals
    from fedray.simulation.launch import run_study

    data = tiny_study(tmp_path, **overrides)
    data["tracking"] = {**data["tracking"], "run_name": name, **(tracking_extra or {})}
    config = with_absolute_paths(config_from_data(data))
    hospitals, test_dir = prepare_hospitals(config)
    return config, test_dir, run_study(config, hospitals, test_dir, callbacks=callbacks)


class BestAtRound:
    """A study callback that makes round `round` the best one: it raises that round's dice/mean in the
    driver's rows (after the run files and MLflow took the real value), so later rounds never beat it."""

    def __init__(self, round_index: int) -> None:
        self.round_index = round_index

    def on_run_start(self, run) -> None:
        pass

    def on_prepared(self, run) -> None:
        pass

    def on_round_end(self, run, row) -> None:
        if row["round"] == self.round_index:
            row["dice/mean"] = 2.0  # above any Dice

    def on_run_end(self, run, status, summary) -> None:
        pass
