"""The hospital actor class that placement starts: torch and MONAI load in the actor's process only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fedray.config import StudyConfig
from fedray.messages import EvalReport, EvalTask, PrepareTask, RoundPart, TaskReport, TrainTask

# The launcher (`fedray run`, a notebook) only starts the actors and waits on them, so it should not
# pay for torch, MONAI and MLflow: seconds of CPU that, on a small machine, compete with Ray's own
# start and with the actors' imports before the first round. Ray needs the class of an actor where
# the actor is created, so thin classes (this one, and launch.DriverActor for the Driver) stand in
# for the real ones there and build the real one inside the actor's process. Their signatures repeat the real ones exactly: Ray
# checks a call's arguments against them when the call is made, in the caller (a test compares them).
# A hospital task is one typed message (messages.TrainTask / PrepareTask / EvalTask), so a method that needs
# more never changes these signatures.


class HospitalActor:
    """A HospitalWorker, built in its actor's process (see `fedray.simulation.worker.HospitalWorker`)."""

    def __init__(self, config: StudyConfig, threads: int, gpu_memory_fraction: float = 0.0) -> None:
        from fedray.simulation.worker import HospitalWorker

        self._worker = HospitalWorker(config, threads, gpu_memory_fraction)

    def pid(self) -> int:
        return self._worker.pid()

    def machine(self) -> dict:
        return self._worker.machine()

    def ready(self) -> bool:
        return self._worker.ready()

    def run(self, task: TrainTask | PrepareTask | EvalTask) -> TaskReport | EvalReport:
        return self._worker.run(task)

    def run_batch(self, tasks: Sequence[TrainTask]) -> list[TaskReport]:
        return self._worker.run_batch(tasks)

    def report_steps_to(self, driver: Any) -> None:
        self._worker.report_steps_to(driver)

    def flush(self, round_index: int) -> RoundPart:
        return self._worker.flush(round_index)
