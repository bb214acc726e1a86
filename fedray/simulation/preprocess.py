"""The preprocessing step before round 1: every case missing from the case store written by parallel Ray tasks."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import ray
from ray.exceptions import RayTaskError

from fedray.config import DataConfig
from fedray.data.case_store import Recipe, StoredCase, check_fits_memory, is_stored, stored_cases
from fedray.data.federation import Hospital
from fedray.errors import FedrayError


def missing_cases(hospitals: Sequence[Hospital], data: DataConfig) -> list[StoredCase]:
    """The hospitals' cases that the store does not hold yet (each once)."""
    refs = {ref.folder: ref for hospital in hospitals for ref in stored_cases(hospital, data)}
    return [ref for ref in refs.values() if not is_stored(ref)]


def preprocess_cases(
    hospitals: Sequence[Hospital],
    data: DataConfig,
    on_progress: Callable[[int, int], None] | None = None,
) -> int:
    """Write the hospitals' missing cases into the store, one Ray task per case; returns how many.

    Each case is checked against the memory available (header only) before any task starts, so a
    case too large fails the study at once instead of after the others. A store holding every
    case costs one stat per file. `on_progress(done, total)` after each case.

    Raises:
        FedrayError: a case too large, unreadable or unwritable (one paragraph naming it).
    """
    missing = missing_cases(hospitals, data)
    if not missing:
        return 0
    for ref in missing:
        check_fits_memory(ref.case)
    recipe = Recipe.of(data)
    write = ray.remote(_write_case).options(num_cpus=1, max_retries=0)
    pending = [write.remote(ref, recipe) for ref in missing]
    if on_progress is not None:
        on_progress(0, len(missing))
    done = 0
    try:
        while pending:
            finished, pending = ray.wait(pending, num_returns=1)
            ray.get(finished)
            done += 1
            if on_progress is not None:
                on_progress(done, len(missing))
    except RayTaskError as error:
        for task in pending:
            ray.cancel(task)
        if isinstance(error.cause, FedrayError):
            raise type(error.cause)(str(error.cause)) from None
        raise
    return len(missing)


def _write_case(ref: StoredCase, recipe: Recipe) -> None:
    """One case into the store (a Ray task; safe if another study writes the same case at once)."""
    from fedray.simulation.lean_imports import import_monai

    import_monai()  # first, before anything imports MONAI (see lean_imports)
    import torch

    from fedray.data.datasets import ensure_stored

    torch.set_num_threads(1)  # one CPU per task, as booked
    ensure_stored(ref, recipe)
