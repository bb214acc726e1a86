"""The Ray actor classes a launcher starts: torch and MONAI (and the driver's MLflow) load in the actor only."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fedray.config import StudyConfig
from fedray.data.federation import Hospital
from fedray.messages import Progress, RoundPart, TaskReport

if TYPE_CHECKING:
    from fedray.simulation.placement import HospitalActors

# The launcher (`fedray run`, a notebook) only starts these actors and waits on them, so it should not
# pay for torch, MONAI and MLflow: seconds of CPU that, on a small machine, compete with Ray's own
# start and with the actors' imports before the first round. Ray needs the class of an actor where
# the actor is created, so these thin classes stand in for the Driver and the HospitalWorker there and
# build the real one inside the actor's process. Their signatures repeat the real ones exactly: Ray
# checks a call's arguments against them when the call is made, in the caller (a test compares them).


class DriverActor:
    """The study's Driver, built in its actor's process (see `fedray.simulation.driver.Driver`)."""

    def __init__(
        self,
        config: StudyConfig,
        hospitals: list[Hospital],
        test_dir: Path,
        resume: bool = False,
        skipped: tuple[dict, ...] = (),
    ) -> None:
        from fedray.simulation.driver import Driver

        self._driver = Driver(config, hospitals, test_dir, resume, skipped)

    def run(self, started: HospitalActors) -> dict:
        return self._driver.run(started)

    def progress(self) -> Progress:
        return self._driver.progress()

    def stop(self) -> None:
        self._driver.stop()


class HospitalActor:
    """A HospitalWorker, built in its actor's process (see `fedray.simulation.worker.HospitalWorker`)."""

    def __init__(self, config: StudyConfig, threads: int, gpu_memory_fraction: float = 0.0) -> None:
        from fedray.simulation.worker import HospitalWorker

        self._worker = HospitalWorker(config, threads, gpu_memory_fraction)

    def pid(self) -> int:
        return self._worker.pid()

    def node_id(self) -> str:
        return self._worker.node_id()

    def ready(self) -> bool:
        return self._worker.ready()

    def load(self, hospital: Hospital) -> list[dict]:
        return self._worker.load(hospital)

    def pretrain_teacher(self, hospital: Hospital, data: list[dict], steps: int) -> bytes:
        return self._worker.pretrain_teacher(hospital, data, steps)

    def train(
        self,
        round_index: int,
        hospital: Hospital,
        data: list[dict],
        global_payload: bytes,
        teachers: dict | None = None,
        client_state: bytes | None = None,
        slowdown: float = 1.0,
        deadline_s: float | None = None,
    ) -> TaskReport:
        return self._worker.train(
            round_index, hospital, data, global_payload, teachers, client_state, slowdown, deadline_s
        )

    def flush(self, round_index: int) -> RoundPart:
        return self._worker.flush(round_index)
