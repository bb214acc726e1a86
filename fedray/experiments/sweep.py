"""`fedray sweep`: a grid of studies (variants x seeds x config values) as children of one MLflow run."""

from __future__ import annotations

import csv
import itertools
import json
import logging
import math
import statistics
import threading
import traceback
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path

from fedray.config import (
    NOT_IN_DIGEST_SECTIONS,
    PLATEAU_RULE_KEYS,
    StudyConfig,
    extension_problem,
    flatten,
    load_config,
    read_yaml,
    with_absolute_paths,
)
from fedray.configtypes import build, require, to_data
from fedray.errors import FedrayError
from fedray.tracking.checkpoint import checkpoint_path, load_checkpoint
from fedray.tracking.folder_lock import StudyFolderInUse, folder_holder
from fedray.tracking.plateau import plateau_rule, rounds_to_plateau

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Variant:
    """One method (or setting) of the comparison: config fragments plus overrides, under a label."""

    label: str
    fragments: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()
    seeds: tuple[int, ...] | None = None  # this variant's seeds, when not the sweep's (e.g. a 1-seed screen)


@dataclass(frozen=True)
class SweepConfig:
    """A sweep file: the base study, the variants, the seeds and any other grid axes."""

    name: str
    study: str
    variants: tuple[Variant, ...]
    seeds: tuple[int, ...] = (0,)
    overrides: tuple[str, ...] = ()
    grid: dict = field(default_factory=dict)  # "section.key" -> list of values
    parallel: int = 1  # cells run at once on the one Ray cluster, each with 1/parallel of it

    def __post_init__(self) -> None:
        require(self.parallel >= 1, "parallel must be >= 1 (1 runs the cells one after another).")
        labels = [v.label for v in self.variants]
        require(len(labels) > 0, "variants: list at least one variant.")
        require(len(set(labels)) == len(labels), "variants: labels must be unique.")
        require(len(self.seeds) > 0, "seeds: list at least one seed.")
        for key, values in self.grid.items():
            require(isinstance(values, list) and values, f"grid.{key} must be a non-empty list.")
        for v in self.variants:
            require(v.seeds is None or len(v.seeds) > 0, f"variants: {v.label}'s seeds must list at least one seed.")

    def seed_order(self) -> list[int]:
        """Every seed of the sweep, the sweep's own first, then the variants' others as they appear."""
        order = list(dict.fromkeys(self.seeds))
        for v in self.variants:
            order += [s for s in v.seeds or () if s not in order]
        return order


@dataclass(frozen=True)
class Cell:
    """One study of the sweep."""

    run_name: str
    config: StudyConfig
    variant: str = ""  # its variant's label


def load_sweep(path: str | Path) -> SweepConfig:
    """Read and validate a sweep YAML file."""
    return build(SweepConfig, read_yaml(Path(path)))


def plan_cells(sweep: SweepConfig, base_dir: Path = Path(".")) -> list[Cell]:
    """Every cell's validated config, seed by seed (every variant at the first seed runs before any at
    the second, so a stopped sweep has a whole screen); any invalid cell fails the sweep before anything runs."""
    axes = list(sweep.grid.items())
    cells = []
    for seed, variant, *values in itertools.product(sweep.seed_order(), sweep.variants, *[v for _, v in axes]):
        if seed not in (variant.seeds or sweep.seeds):
            continue
        settings = [f"{key}={value if isinstance(value, str) else json.dumps(value)}" for (key, _), value in zip(axes, values)]
        suffix = "".join(f"__{s}" for s in settings)
        run_name = f"{sweep.name}__{variant.label}__s{seed}{suffix}"
        paths = [base_dir / sweep.study, *[base_dir / f for f in variant.fragments]]
        config = load_config(
            paths,
            [*sweep.overrides, *variant.overrides, *settings, f"seed={seed}", f"tracking.run_name={run_name}",
             f"tracking.experiment={sweep.name}"],
        )
        cells.append(Cell(run_name, with_absolute_paths(config), variant.label))
    return cells


def cell_share(config: StudyConfig, cluster: dict[str, float], parallel: int) -> StudyConfig:
    """The cell's config with `resources.actors` sized to 1/parallel of the cluster's CPUs (and GPUs).

    Without it each of the cells running at once would ask for as many actors as the whole cluster
    holds, and all but one would wait for the others' placement groups. Left alone when `parallel`
    is 1 or the sweep sets `resources.actors` itself. Hospitals with their own `resources.hospitals`
    actor keep it; the shared actors get the rest of the share, and at least one actor.
    """
    res = config.resources
    if parallel == 1 or res.actors is not None:
        return config
    fit = res.actors_fitting(
        cluster.get("CPU", 0) / parallel - sum(h.cpus for h in res.hospitals.values()),
        cluster.get("GPU", 0) / parallel - sum(h.gpus for h in res.hospitals.values()),
    )
    if fit < 1:
        log.warning(
            "%s: 1/%d of the cluster (%g CPUs, %g GPUs) holds no actor of %g CPUs and %g GPUs; it gets one, "
            "so cells may wait for each other's placement (resources.placement_timeout_s). Lower parallel.",
            config.run_name, parallel, cluster.get("CPU", 0), cluster.get("GPU", 0), res.cpus_per_actor,
            res.gpus_per_actor,
        )
    return replace(config, resources=replace(res, actors=max(fit, 1)))


# What a cell's folder may differ in and still hold that cell: where it runs and is logged (the
# sections the config digest leaves out), and where its files live (paths compared by folder name,
# since finished folders move machines).
_PATH_KEYS = ("data.cache_dir",)


def _comparable(config: dict) -> dict:
    data = dict(config.get("data", {}))
    data["sites"] = [{**site, "path": Path(site["path"]).name} for site in data.get("sites", [])]
    if data.get("test_set"):
        data["test_set"] = Path(data["test_set"]).name
    flat = flatten({**config, "data": data})
    # the plateau rule's keys judge a finished curve (finished_under_another_rule), not what a round computes
    return {k: v for k, v in flat.items()
            if not k.startswith(NOT_IN_DIGEST_SECTIONS) and k not in _PATH_KEYS and k not in PLATEAU_RULE_KEYS}


def changes_since_started(config: StudyConfig) -> dict[str, tuple]:
    """{key: (stored value, this cell's value)} for each key in which the config the cell's folder
    was started under differs from the cell's ({} if the folder holds none or the same one)."""
    stored_path = config.run_dir / "config.resolved.yaml"
    if not stored_path.is_file():
        return {}
    before, now = _comparable(read_yaml(stored_path)), _comparable(to_data(config))
    keys = sorted(k for k in before.keys() | now.keys() if str(before.get(k)) != str(now.get(k)))
    return {k: (before.get(k, "(unset)"), now.get(k, "(unset)")) for k in keys}


def described(changes: dict[str, tuple]) -> str:
    """A cell's changed keys (changes_since_started) in words: "rounds: 80 -> 150, ..." ('' if none)."""
    shown = [f"{k}: {before} -> {now}" for k, (before, now) in list(changes.items())[:4]]
    return ", ".join(shown) + (f" and {len(changes) - 4} more" if len(changes) > 4 else "")


def extends_started_cell(config: StudyConfig, changes: dict[str, tuple] | None = None) -> bool:
    """The cell's folder holds this cell trained to a lower rounds cap, with a checkpoint to train on
    from and a learning rate that does not depend on the cap (config.extension_problem): the sweep's
    cap was raised, and resuming the cell gives what a study started with the new cap would.
    `changes`: changes_since_started(config), where the caller has it already."""
    changes = changes_since_started(config) if changes is None else changes
    if set(changes) != {"rounds"} or not checkpoint_path(config.run_dir).is_file():
        return False
    return not extension_problem(config, int(changes["rounds"][0]))


def finished_under_another_rule(config: StudyConfig) -> bool:
    """The cell's folder holds a finished study (summary.json) whose end the current code would not
    have called an end: its summary was written under another plateau rule, or it stopped at a
    plateau that the current rule does not see in its rounds. Resuming it (it has a checkpoint) trains
    on to the current rule's plateau or the cap, or, where no round is left, rewrites its summary."""
    summary_path = config.run_dir / "summary.json"
    if not summary_path.is_file() or not checkpoint_path(config.run_dir).is_file():
        return False
    summary = json.loads(summary_path.read_text())
    ev = config.eval
    rule = plateau_rule(ev.plateau_window, ev.plateau_tolerance, ev.plateau_min_rounds)
    if summary.get("plateau_rule", rule) != rule:
        return True
    if summary.get("rounds_trained", config.rounds) >= config.rounds or not ev.stop_at_plateau:
        return False
    with open(config.run_dir / "rounds.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    dice = [float(row["dice/mean"]) if row["dice/mean"] else math.nan for row in rows]
    rounds = [int(row["round"]) for row in rows]
    return rounds_to_plateau(rounds, dice, ev.plateau_window, ev.plateau_tolerance, ev.plateau_min_rounds) is None


# What a sweep would do with a cell now (`cell_state`).
NOT_STARTED, IN_PROGRESS, FINISHED = "not started", "in progress", "finished"
RUNNING = "running"  # a live process holds its folder (`sweep_status` only)
TO_EXTEND, TO_TRAIN_ON = "to train on to the raised cap", "to train on under the current rule"
CONFIG_CHANGED = "config changed"


def cell_state(cell: Cell) -> tuple[str, str]:
    """What a sweep does with the cell now, and why: one of the states above, with the config
    changes that block it (CONFIG_CHANGED) or raised its cap (TO_EXTEND), else ""."""
    changes = changes_since_started(cell.config)  # the folder's stored config read once
    if changes and extends_started_cell(cell.config, changes):
        return TO_EXTEND, described(changes)  # resumed from its checkpoint on to the new cap
    if changes:
        return CONFIG_CHANGED, described(changes)
    if finished_under_another_rule(cell.config):
        return TO_TRAIN_ON, ""
    if (cell.config.run_dir / "summary.json").is_file():
        return FINISHED, ""
    return (IN_PROGRESS if checkpoint_path(cell.config.run_dir).is_file() else NOT_STARTED), ""


def sweep_status(cells: list[Cell]) -> list[dict]:
    """Each cell's state (`cell_state`, or RUNNING where a live process holds its folder) and where it
    stands, from its folder alone (no Ray, no MLflow):
    rounds trained and the cap, the plateau round and last-window mean Dice of a finished cell, and
    its wall time so far (summary.json's, or the checkpoint's for one in progress)."""
    rows = []
    for cell in cells:
        state, why = cell_state(cell)
        holder = folder_holder(cell.config.run_dir)
        if holder is not None and state != CONFIG_CHANGED:
            state, why = RUNNING, holder
        row = {"study": cell.run_name, "variant": cell.variant,
               "state": state, "why": why, "rounds": None, "cap": cell.config.rounds,
               "plateau_round": None, "dice_last_window": math.nan, "wall_s": math.nan}
        summary_path, checkpoint_file = cell.config.run_dir / "summary.json", checkpoint_path(cell.config.run_dir)
        if summary_path.is_file() and state != RUNNING:
            summary = json.loads(summary_path.read_text())
            row |= {"rounds": summary.get("rounds_trained"), "plateau_round": summary.get("rounds_to_plateau"),
                    "dice_last_window": _number(summary.get("dice/mean_last_window")),
                    "wall_s": _number(summary.get("wall_s"))}
        elif checkpoint_file.is_file():  # in progress or running: as far as its last checkpoint
            checkpoint = load_checkpoint(checkpoint_file)
            row |= {"rounds": checkpoint.round, "wall_s": _number(checkpoint.meta.get("wall_s"))}
        rows.append(row)
    return rows


def _number(value) -> float:
    """A summary's number, NaN where it is absent or null (summary.json writes NaN as null)."""
    return math.nan if value is None else float(value)


def hours_left(rows: list[dict]) -> float:
    """A rough estimate of the wall hours the unfinished cells still need: each takes the median wall
    time of the finished cells of its variant (of all finished cells where its variant has none),
    less what it has run already; NaN before any cell has finished. Finished cells that will train on
    (to a raised cap, under a new rule) are not counted until they run: how far they go is not known."""
    finished = [r for r in rows if r["state"] == FINISHED and not math.isnan(r["wall_s"])]
    if not finished:
        return math.nan
    overall = statistics.median(r["wall_s"] for r in finished)
    left = 0.0
    for row in rows:
        if row["state"] not in (NOT_STARTED, IN_PROGRESS, RUNNING):
            continue
        own = [r["wall_s"] for r in finished if r["variant"] == row["variant"]]
        expected = statistics.median(own) if own else overall
        done = 0.0 if math.isnan(row["wall_s"]) else row["wall_s"]
        left += max(0.0, expected - done)
    return left / 3600


def run_sweep(
    sweep: SweepConfig,
    cells: list[Cell],
    run_cell: Callable[[StudyConfig, bool, threading.Event], dict],
    open_parent: Callable[[str], str],
    on_cell: Callable[[int, Cell, str], None] | None = None,
    parallel: int = 1,
) -> dict[str, str]:
    """Run cells one after another, or up to `parallel` at once; finished cells are skipped,
    interrupted ones resume from their checkpoint, and a failing cell does not stop the rest. A cell
    whose folder was started under another config is neither skipped nor resumed: it fails, naming
    what changed; except where only the rounds cap rose and the learning rate does not depend on it
    (extends_started_cell): then the cell, finished or not, resumes on to the new cap. A finished
    cell whose end the current plateau rule would not have called one (finished_under_another_rule)
    resumes too.

    Ctrl-C (KeyboardInterrupt in the calling thread) stops every running cell after its current
    round's checkpoint, starts no new one, and is raised again once they have stopped.

    Args:
        run_cell: runs (resume=False) or resumes (True) one study config and returns its summary; it
            stops the study and raises KeyboardInterrupt once the event is set.
        open_parent: returns the sweep's MLflow parent run id (created once, found again on resume).
        on_cell: called with (index, cell, status) as each cell starts and ends ("stopped" after
            Ctrl-C), from the cell's thread.
        parallel: cells run at once (threads of this process, each driving one study on Ray).

    Returns:
        run name -> "done", "skipped (finished before)" or "failed: <reason>", in cell order.
    """
    parent_id = open_parent(sweep.name)
    stop = threading.Event()
    status: dict[str, str] = {}
    todo = []
    for index, cell in enumerate(cells):
        state, why = cell_state(cell)
        if state == CONFIG_CHANGED:
            status[cell.run_name] = (
                f"failed: its folder {cell.config.run_dir} was started under another config ({why}); "
                f"move the folder away (or rename the sweep) to run the cell anew"
            )
        elif state == FINISHED:
            status[cell.run_name] = "skipped (finished before)"
        else:
            todo.append((index, cell))  # started afresh, or resumed from its checkpoint
            continue
        if on_cell is not None:
            on_cell(index, cell, status[cell.run_name])

    # Running cells are counted by their own threads, under the lock that sets `stop`: Ctrl-C can land
    # inside pool.submit after a cell's thread started but before its future (or the thread) is
    # recorded, so neither our futures nor the pool's shutdown can be trusted to wait for every cell.
    running = threading.Condition()
    active = [0]

    def run_one(index: int, cell: Cell) -> str:
        with running:
            if stop.is_set():
                return "not started (stopped)"
            active[0] += 1
        try:
            return _run_counted(index, cell)
        finally:
            with running:
                active[0] -= 1
                running.notify_all()

    def _run_counted(index: int, cell: Cell) -> str:
        if cell_state(cell)[0] == FINISHED:  # finished since the sweep looked (another process trained it)
            result = "skipped (finished since)"
            if on_cell is not None:
                on_cell(index, cell, result)
            return result
        if on_cell is not None:
            on_cell(index, cell, "running")
        config = replace(cell.config, tracking=replace(cell.config.tracking, parent_run_id=parent_id))
        try:
            run_cell(config, checkpoint_path(config.run_dir).is_file(), stop)
            result = "done"
        except KeyboardInterrupt:
            if not stop.is_set():
                raise  # Ctrl-C reached this thread itself: the caller stops the sweep
            result = "stopped"
        except StudyFolderInUse:
            result = f"skipped (in use by another process: {folder_holder(config.run_dir) or 'it has ended since'})"
        except FedrayError as error:
            result = f"failed: {error}"
        except Exception as error:  # noqa: BLE001 - one broken cell must not stop the sweep
            log.error("cell %s failed:\n%s", cell.run_name, traceback.format_exc())
            result = f"failed: {type(error).__name__}: {error}"
        if on_cell is not None:
            on_cell(index, cell, result)
        return result

    if parallel == 1:
        for index, cell in todo:
            status[cell.run_name] = run_one(index, cell)
    else:
        with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="fedray-cell") as pool:
            futures: dict[Future, Cell] = {}
            try:  # from the first submit on: Ctrl-C may come while cells are still being handed out
                for index, cell in todo:
                    futures[pool.submit(run_one, index, cell)] = cell
                pending = set(futures)
                while pending:  # a timeout, so Ctrl-C reaches this thread while cells run
                    _, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            except KeyboardInterrupt:
                with running:
                    stop.set()  # running cells stop after their round's checkpoint; queued ones never start
                    running.wait_for(lambda: active[0] == 0)
                for future in futures:
                    future.cancel()
                raise
        for future, cell in futures.items():
            status[cell.run_name] = future.result()
    return {cell.run_name: status[cell.run_name] for cell in cells}
