"""Start or join Ray, run the Driver as an actor on this node, and relay its progress to the caller.

Imports Ray and fedray's light modules only: torch, MONAI and MLflow are imported by the actors.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import ray
from ray.exceptions import RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from fedray.config import StudyConfig
from fedray.data.federation import Hospital
from fedray.errors import FedrayError
from fedray.messages import Progress
from fedray.simulation.cluster import init_ray
from fedray.simulation.preprocess import preprocess_cases
from fedray.simulation.placement import (
    HospitalActors,
    check_resource_overrides,
    release_placement,
    start_hospital_actors,
)
from fedray.tracking.callbacks import Callback
from fedray.tracking.folder_lock import study_folder_lock


class DriverActor:
    """The study's Driver, built in its actor's process (see `fedray.simulation.driver.Driver`).

    A thin stand-in like `actors.HospitalActor`, so the launcher imports no torch, MONAI or MLflow;
    its signatures repeat the Driver's exactly (Ray checks calls against them; a test compares them).
    """

    def __init__(
        self,
        config: StudyConfig,
        hospitals: list[Hospital],
        test_dir: Path,
        resume: bool = False,
        skipped: tuple[dict, ...] = (),
        callbacks: tuple[Callback, ...] = (),
    ) -> None:
        from fedray.simulation.driver import Driver

        self._driver = Driver(config, hospitals, test_dir, resume, skipped, callbacks)

    def run(self, started: HospitalActors) -> dict:
        return self._driver.run(started)

    def progress(self) -> Progress:
        return self._driver.progress()

    def stop(self) -> None:
        self._driver.stop()

    def hospital_steps(self, round_index: int, hospital_id: str, done: int, steps: int) -> None:
        self._driver.hospital_steps(round_index, hospital_id, done, steps)


def run_study(
    config: StudyConfig,
    hospitals: list[Hospital],
    test_dir: Path,
    on_progress: Callable[[Progress], None] | None = None,
    poll_s: float = 0.5,
    resume: bool = False,
    skipped: tuple[dict, ...] = (),
    stop: threading.Event | None = None,
    callbacks: tuple = (),
    on_preprocess: Callable[[int, int], None] | None = None,
) -> dict:
    """Run (or resume from its last checkpoint) a study on Ray and return its summary.

    Ctrl-C, or setting `stop` (how a parallel sweep stops the studies its threads run), stops it after
    the current round's checkpoint and raises KeyboardInterrupt; the MLflow run ends KILLED. `skipped`
    lists the cases left out as bad input ({site, case, file, reason}), recorded with the run;
    `callbacks` run in the driver actor after fedray's own. Cases missing from the case store are
    preprocessed first, by Ray tasks on every CPU (`on_preprocess(done, total)` as they finish),
    before the hospital actors take the CPUs. Most callers want `run_experiment`.
    """
    check_resource_overrides(config, hospitals)
    # before Ray starts: a second process for this folder stops here, having written nothing
    with study_folder_lock(config.run_dir):
        started = init_ray(config.resources)
        try:
            preprocess_cases(hospitals, config.data, on_preprocess)
            here = ray.get_runtime_context().get_node_id()
            driver = (
                ray.remote(DriverActor)
                .options(
                    num_cpus=0,  # the driver waits and aggregates; CPUs stay with the hospital actors
                    max_concurrency=2,  # so progress(), stop() and hospital_steps() answer while run() is busy
                    scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False),
                )
                .remote(config, hospitals, test_dir, resume, skipped, callbacks)
            )
            # Hospital actors start here, while the driver actor's process starts: both import torch and
            # MONAI, so starting them one after the other would add seconds before the first round.
            hospital_actors = start_hospital_actors(config, hospitals)
            result = driver.run.remote(hospital_actors)
            try:
                while True:
                    ready, _ = ray.wait([result], timeout=poll_s)
                    if on_progress is not None:
                        on_progress(ray.get(driver.progress.remote()))
                    if ready:
                        return ray.get(result)
                    if stop is not None and stop.is_set():
                        raise KeyboardInterrupt  # only the main thread gets Ctrl-C; stop the same way
            except KeyboardInterrupt:
                driver.stop.remote()
                ray.wait([result])  # the driver finishes the round, checkpoints, marks the run KILLED
                raise
            finally:
                ray.kill(driver)  # and with it the replacement actors it started
                for actor in hospital_actors.actors:
                    ray.kill(actor)
                release_placement(config)  # in case the driver died before releasing it
        except RayTaskError as error:
            cause = error.cause
            while isinstance(cause, RayTaskError):  # driver actor -> hospital actor -> the real error
                cause = cause.cause
            if isinstance(cause, FedrayError):
                raise type(cause)(str(cause)) from None
            raise
        finally:
            if started:
                ray.shutdown()

