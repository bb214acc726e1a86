"""The Ray actor classes a launcher starts: each imports torch, MONAI and MLflow in its own process only."""

from __future__ import annotations

from fedray.messages import Progress

# The launcher (`fedray run`, a sweep, a notebook) only starts these actors and waits on them, so it
# should not pay for torch, MONAI and MLflow: seconds of CPU that, on a small machine, compete with
# Ray's own start and with the actors' imports before the first round. Ray needs the class of an actor
# (and its method names) where the actor is created, so these thin classes stand in for the Driver and
# the HospitalWorker there and build the real one inside the actor's process.


class DriverActor:
    """The study's Driver, built in its actor's process (see `fedray.simulation.driver.Driver`)."""

    def __init__(self, *args, **kwargs) -> None:
        from fedray.simulation.driver import Driver

        self._driver = Driver(*args, **kwargs)

    def run(self, started) -> dict:
        return self._driver.run(started)

    def progress(self) -> Progress:
        return self._driver.progress()

    def stop(self) -> None:
        self._driver.stop()


class HospitalActor:
    """A HospitalWorker, built in its actor's process (see `fedray.simulation.worker.HospitalWorker`)."""

    def __init__(self, *args, **kwargs) -> None:
        from fedray.simulation.worker import HospitalWorker

        self._worker = HospitalWorker(*args, **kwargs)

    def pid(self) -> int:
        return self._worker.pid()

    def node_id(self) -> str:
        return self._worker.node_id()

    def ready(self) -> bool:
        return self._worker.ready()

    def load(self, hospital):
        return self._worker.load(hospital)

    def pretrain_teacher(self, hospital, data, steps: int) -> bytes:
        return self._worker.pretrain_teacher(hospital, data, steps)

    def train(self, *args, **kwargs):
        return self._worker.train(*args, **kwargs)

    def flush(self, round_index: int):
        return self._worker.flush(round_index)
