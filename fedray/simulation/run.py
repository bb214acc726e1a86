"""run_experiment: one study from a config to its summary — data checked and prepared, Ray started, rounds run."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from fedray.config import StudyConfig
from fedray.messages import Progress
from fedray.tracking.callbacks import Callback

if TYPE_CHECKING:
    from fedray.data.federation import PreparedData


def run_experiment(
    config: StudyConfig,
    callbacks: Sequence[Callback] = (),
    *,
    resume: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
    on_data: Callable[[int, int], None] | None = None,
    on_ready: Callable[[PreparedData], None] | None = None,
    stop: threading.Event | None = None,
    data_lock: threading.Lock | None = None,
    on_preprocess: Callable[[int, int], None] | None = None,
) -> dict:
    """Run (or resume from its last checkpoint) one study and return its summary (also summary.json).

    What needs no case read (listings, names, organs) is checked first. Then Ray starts (or is
    joined, see `init_ray`) while a thread prepares the data (checks every case, or writes phantoms
    on first use): Ray's start is mostly waiting on its own processes, so the two overlap. A Ray
    instance started here is shut down at the end. `callbacks` run in the driver actor after
    fedray's own (run files, MLflow, checkpoints, progress); `on_progress` is called in this
    process about twice a second; `on_data(done, total)` while folders are prepared; `on_ready`
    once the data is ready; `on_preprocess(done, total)` while missing cases are written to the
    case store (before round 1). Ctrl-C, or setting `stop`, stops the study after the current round's
    checkpoint and raises KeyboardInterrupt. `data_lock` serialises data preparation between
    studies that share a data cache (a parallel sweep's cells).

    Raises:
        FedrayError: bad config, data or resources, in one paragraph.
    """
    from fedray.data.federation import check_layout, prepare_hospitals
    from fedray.simulation.cluster import init_ray, shutdown_ray
    from fedray.simulation.launch import run_study
    from fedray.tracking.folder_lock import refuse_a_held_folder

    layout = check_layout(config)
    refuse_a_held_folder(config.run_dir)  # before Ray starts and the data is read; run_study holds the lock

    def prepare() -> PreparedData:
        if data_lock is None:
            return prepare_hospitals(config, on_data, layout)
        with data_lock:
            return prepare_hospitals(config, on_data, layout)

    preparing = InThread(prepare)
    started = init_ray(config.resources)  # in the calling thread: Ray sets its SIGTERM handler only in the main one
    previous = sigterm_as_ctrl_c()
    try:
        prepared = preparing.result()
        if stop is not None and stop.is_set():
            raise KeyboardInterrupt  # stopped while the data was prepared: do not start the study
        if on_ready is not None:
            on_ready(prepared)
        return run_study(
            config, prepared.hospitals, prepared.test_dir, on_progress=on_progress, resume=resume,
            skipped=tuple(bad.as_dict() for bad in prepared.skipped), stop=stop, callbacks=tuple(callbacks),
            on_preprocess=on_preprocess,
        )
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if started:
            shutdown_ray()


def sigterm_as_ctrl_c():
    """In the main thread, make SIGTERM (`kill`, `timeout`, a job scheduler) stop the study like Ctrl-C:
    finish the round, checkpoint, mark the MLflow run KILLED (instead of Ray's handler, which exits at
    once and leaves the run RUNNING). Returns the handler it replaced, or None off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum, frame) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, stop)


class InThread:
    """Runs fn(*args) in a daemon thread: Ctrl-C while waiting for it returns at once (a half-written
    phantom folder is harmless: its dataset.json is written last)."""

    def __init__(self, fn, *args) -> None:
        self._value = self._error = None
        self._thread = threading.Thread(target=self._run, args=(fn, *args), name=fn.__name__, daemon=True)
        self._thread.start()

    def _run(self, fn, *args) -> None:
        try:
            self._value = fn(*args)
        except BaseException as error:  # noqa: BLE001 - handed to the waiting thread by result()
            self._error = error

    def result(self):
        """fn's value, or its exception raised here."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value
