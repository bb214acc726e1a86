"""`fedray sweep`: a grid of studies (variants x seeds x config values) as children of one MLflow run."""

from __future__ import annotations

import itertools
import json
import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from fedray.config import StudyConfig, load_config, read_yaml, with_absolute_paths
from fedray.configtypes import build, require
from fedray.errors import FedrayError
from fedray.tracking.checkpoint import checkpoint_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Variant:
    """One method (or setting) of the comparison: config fragments plus overrides, under a label."""

    label: str
    fragments: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class SweepConfig:
    """A sweep file: the base study, the variants, the seeds and any other grid axes."""

    name: str
    study: str
    variants: tuple[Variant, ...]
    seeds: tuple[int, ...] = (0,)
    overrides: tuple[str, ...] = ()
    grid: dict = field(default_factory=dict)  # "section.key" -> list of values

    def __post_init__(self) -> None:
        labels = [v.label for v in self.variants]
        require(len(labels) > 0, "variants: list at least one variant.")
        require(len(set(labels)) == len(labels), "variants: labels must be unique.")
        require(len(self.seeds) > 0, "seeds: list at least one seed.")
        for key, values in self.grid.items():
            require(isinstance(values, list) and values, f"grid.{key} must be a non-empty list.")


@dataclass(frozen=True)
class Cell:
    """One study of the sweep."""

    run_name: str
    config: StudyConfig


def load_sweep(path: str | Path) -> SweepConfig:
    """Read and validate a sweep YAML file."""
    return build(SweepConfig, read_yaml(Path(path)))


def plan_cells(sweep: SweepConfig, base_dir: Path = Path(".")) -> list[Cell]:
    """Every cell's validated config; any invalid cell fails the whole sweep before anything runs."""
    axes = list(sweep.grid.items())
    cells = []
    for variant, seed, *values in itertools.product(sweep.variants, sweep.seeds, *[v for _, v in axes]):
        settings = [f"{key}={value if isinstance(value, str) else json.dumps(value)}" for (key, _), value in zip(axes, values)]
        suffix = "".join(f"__{s}" for s in settings)
        run_name = f"{sweep.name}__{variant.label}__s{seed}{suffix}"
        paths = [base_dir / sweep.study, *[base_dir / f for f in variant.fragments]]
        config = load_config(
            paths,
            [*sweep.overrides, *variant.overrides, *settings, f"seed={seed}", f"tracking.run_name={run_name}",
             f"tracking.experiment={sweep.name}"],
        )
        cells.append(Cell(run_name, with_absolute_paths(config)))
    return cells


def run_sweep(
    sweep: SweepConfig,
    cells: list[Cell],
    run_cell: Callable[[StudyConfig, bool], dict],
    open_parent: Callable[[str], str],
    on_cell: Callable[[int, Cell, str], None] | None = None,
) -> dict[str, str]:
    """Run cells one after another; finished cells are skipped, interrupted ones resume from their
    checkpoint, and a failing cell does not stop the rest.

    Args:
        run_cell: runs (resume=False) or resumes (True) one study config and returns its summary.
        open_parent: returns the sweep's MLflow parent run id (created once, found again on resume).
        on_cell: called with (index, cell, status) as each cell starts and ends.

    Returns:
        run name -> "done", "skipped (finished before)" or "failed: <reason>".
    """
    parent_id = open_parent(sweep.name)
    status = {}
    for index, cell in enumerate(cells):
        if (cell.config.run_dir / "summary.json").is_file():
            status[cell.run_name] = "skipped (finished before)"
        else:
            if on_cell is not None:
                on_cell(index, cell, "running")
            config = replace(cell.config, tracking=replace(cell.config.tracking, parent_run_id=parent_id))
            try:
                run_cell(config, checkpoint_path(config.run_dir).is_file())
                status[cell.run_name] = "done"
            except FedrayError as error:
                status[cell.run_name] = f"failed: {error}"
            except Exception as error:  # noqa: BLE001 - one broken cell must not stop the sweep
                log.error("cell %s failed:\n%s", cell.run_name, traceback.format_exc())
                status[cell.run_name] = f"failed: {type(error).__name__}: {error}"
        if on_cell is not None:
            on_cell(index, cell, status[cell.run_name])
    return status
