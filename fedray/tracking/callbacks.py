"""What a study tells its side concerns (run files, MLflow, checkpoints, progress, a user's own): the callback protocol."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedray.config import StudyConfig
    from fedray.data.federation import Hospital
    from fedray.tracking.checkpoint import Checkpoint


@dataclass
class RunContext:
    """One study as its callbacks see it; callbacks fill in what they own (the MLflow run id).

    Attributes:
        resumed: the checkpoint this session continues from (None for a new study).
        rows: every round's metric row so far (rounds.csv), restored from the checkpoint on resume.
        stopping: the user asked the study to stop after this round.
        last_round: this round is the study's last: its rounds are done, or it met the plateau rule
            with eval.stop_at_plateau.
        snapshot: the driver's whole state as a checkpoint (what a checkpoint callback writes).
    """

    config: StudyConfig
    hospitals: Sequence[Hospital]
    test_dir: Path
    tags: dict[str, str]
    skipped: list[dict] = field(default_factory=list)
    resumed: Checkpoint | None = None
    run_id: str | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    stopping: bool = False
    last_round: bool = False
    wall_s: float = 0.0  # the study's time so far, over all its sessions
    hospital_rows: list[dict[str, Any]] = field(default_factory=list)  # the last round's, one per sampled hospital
    case_rows: list[dict[str, Any]] = field(default_factory=list)  # the last evaluation's, per test volume and organ
    snapshot: Callable[[], Checkpoint] | None = None


class Callback:
    """A side concern of a study, called by the driver (in its actor) at each stage; all no-ops here.

    A user's callbacks (`run_experiment(config, callbacks=...)`) run after fedray's own, in the driver
    actor's process, so they must be picklable.
    """

    def on_run_start(self, run: RunContext) -> None:
        """The study starts or resumes; nothing has trained in this session yet."""

    def on_prepared(self, run: RunContext) -> None:
        """One job of the method's preparation phase finished (before round 1)."""

    def on_round_end(self, run: RunContext, row: dict[str, Any]) -> None:
        """A round finished; `row` (also the last of `run.rows`) holds its metrics."""

    def on_run_end(self, run: RunContext, status: str, summary: dict[str, Any] | None) -> None:
        """The study ended: status FINISHED (with its summary), KILLED or FAILED (summary None)."""


class CallbackList(Callback):
    """Calls each callback in order."""

    def __init__(self, callbacks: Sequence[Callback]) -> None:
        self.callbacks = list(callbacks)

    def on_run_start(self, run: RunContext) -> None:
        for callback in self.callbacks:
            callback.on_run_start(run)

    def on_prepared(self, run: RunContext) -> None:
        for callback in self.callbacks:
            callback.on_prepared(run)

    def on_round_end(self, run: RunContext, row: dict[str, Any]) -> None:
        for callback in self.callbacks:
            callback.on_round_end(run, row)

    def on_run_end(self, run: RunContext, status: str, summary: dict[str, Any] | None) -> None:
        for callback in self.callbacks:
            callback.on_run_end(run, status, summary)
