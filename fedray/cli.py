"""Command line: run, resume, sweep, report, bench and data subcommands of `fedray`."""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedray.errors import FedrayError

console = Console(stderr=True)
_STARTED = time.monotonic()  # when the command started (the summary says what each time covers)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `fedray` console script; returns the exit code."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # overrides given after an option (`fedray run CONFIG --dry-run rounds=3`) belong to them
        if getattr(args, "overrides", None) is None or any(e.startswith("-") for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    _quiet_libraries()
    if args.verbose:
        os.environ["FEDRAY_VERBOSE"] = "1"  # read by init_ray
    try:
        return args.handler(args)
    except FedrayError as error:
        console.print(f"[bold red]error:[/] {error}", highlight=False)
        return 2
    except KeyboardInterrupt:
        console.print("[yellow]Stopped after a checkpoint; the MLflow run is marked KILLED. "
                      "Continue with: fedray resume RESULTS_DIR/RUN_NAME[/]")
        return 130


def _parser() -> argparse.ArgumentParser:
    from fedray import __version__

    parser = argparse.ArgumentParser(prog="fedray", description=__doc__)
    parser.add_argument("--version", action="version", version=f"fedray {__version__}")
    parser.add_argument("--verbose", action="store_true", help="show Ray's own start-up messages")
    commands = parser.add_subparsers(metavar="COMMAND")

    run = commands.add_parser("run", help="run one study from a YAML config")
    run.add_argument("config", nargs="?", help="study YAML file, e.g. configs/quickstart.yaml")
    run.add_argument("--repro", type=Path, metavar="RUN_DIR",
                     help="rerun a logged study from its resolved config and compare every metric")
    run.add_argument(
        "overrides",
        nargs="*",
        metavar="FRAGMENT.yaml | section.key=value",
        help="YAML fragments merged in order (e.g. configs/methods/fedkd.yaml), then single-value overrides",
    )
    run.add_argument("--dry-run", action="store_true",
                     help="print the resolved config and check the data layout; run nothing")
    run.add_argument("--overwrite", action="store_true",
                     help="reuse the run's folder and name if they exist (default: a new one, NAME-2, NAME-3, ...)")
    run.set_defaults(handler=_run)

    config_group = commands.add_parser("config", help="inspect study configs without running them")
    config_commands = config_group.add_subparsers(metavar="ACTION")
    show = config_commands.add_parser("show", help="print the resolved YAML (fragments and overrides applied)")
    show.add_argument("config", help="study YAML file")
    show.add_argument("overrides", nargs="*", metavar="FRAGMENT.yaml | section.key=value",
                      help="as for fedray run")
    show.set_defaults(handler=_config_show)
    config_group.set_defaults(handler=_group_help(config_group))

    methods = commands.add_parser("methods", help="list the federated methods, their parameters and fragments")
    methods.set_defaults(handler=_methods)

    resume = commands.add_parser("resume", help="continue a stopped or killed study from its last checkpoint")
    resume.add_argument("run_dir", type=Path, help="the study's results folder, e.g. results/quickstart")
    resume.add_argument("--rounds", type=int, default=None,
                        help="train on to this many rounds (a raised cap; finished studies too, constant lr only)")
    resume.set_defaults(handler=_resume)

    sweep = commands.add_parser("sweep", help="run a grid of studies (variants x seeds x values)")
    sweep.add_argument("sweep", help="sweep YAML file, e.g. configs/bench/mots7_phantom.yaml")
    sweep.add_argument("--parallel", type=int, default=None, metavar="N",
                       help="run up to N cells at once, each on 1/N of the Ray cluster (default: the file's "
                            "parallel, else 1)")
    sweep.add_argument("--status", action="store_true",
                       help="show where each study stands (from its folder; runs nothing) and the hours left")
    sweep.set_defaults(handler=_sweep)

    report = commands.add_parser("report", help="compare the studies of an MLflow experiment across seeds")
    report.add_argument("--experiment", default="fedray", help="MLflow experiment (a sweep's name)")
    report.add_argument("--reference", default="fedkd", help="variant the paired tests compare against")
    report.add_argument("--tracking-uri", default=None, help="default: MLFLOW_TRACKING_URI or results/mlflow.db")
    report.add_argument("--runs", type=Path, nargs="+", default=None, metavar="DIR",
                        help="read finished study folders (or folders of them, e.g. a sweep's committed results) "
                             "instead of an MLflow store")
    report.add_argument("--out", type=Path, default=None, help="default: results/<experiment>/")
    report.add_argument("--no-pictures", action="store_true",
                        help="skip the segmentations figure (it loads one model per method and segments a test volume)")
    report.set_defaults(handler=_report)

    predict = commands.add_parser(
        "predict", help="segment CT volumes with a study's model (label maps in each input's own grid)"
    )
    predict.add_argument("source", metavar="RUN_DIR_OR_MLFLOW_RUN",
                         help="a study's results folder (e.g. results/quickstart), its MLflow run id, or a logged "
                              "model URI (runs:/ID/model, models:/NAME/VERSION)")
    predict.add_argument("--input", type=Path, default=None, help="a .nii/.nii.gz CT volume or a folder of them")
    predict.add_argument("--test-set", action="store_true",
                         help="segment the study's own held-out test set instead, and score it against its references")
    predict.add_argument("--out", required=True, type=Path, help="folder for the label maps and labels.json")
    predict.add_argument("--round", type=_round_choice, default=None, dest="round_index", metavar="N|best",
                         help="use round N's checkpoint (kept with tracking.keep_every) or the best evaluated "
                              "round's (default: the last)")
    predict.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (a GPU if there is one)")
    predict.add_argument("--overlap", type=float, default=None, help="sliding-window overlap (default: the study's)")
    predict.add_argument("--roi-size", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"),
                         help="sliding-window size (default: the study's eval.roi_size)")
    predict.add_argument("--sw-batch-size", type=int, default=None, help="windows per forward pass (default: the study's)")
    predict.add_argument("--overlay", action="store_true", help="also write a PNG of axial and coronal slices per input")
    predict.add_argument("--tracking-uri", default=None,
                         help="MLflow store to look the run id up in (default: MLFLOW_TRACKING_URI or results/mlflow.db)")
    predict.set_defaults(handler=_predict)

    export = commands.add_parser("export", help="write a study's model as a MONAI bundle")
    export.add_argument("run_dir", type=Path, help="the study's results folder, e.g. results/quickstart")
    export.add_argument("--bundle", required=True, type=Path, help="the bundle folder to write")
    export.add_argument("--round", type=_round_choice, default=None, dest="round_index", metavar="N|best",
                        help="export round N's checkpoint (kept with tracking.keep_every) or the best round's")
    export.set_defaults(handler=_export)

    teachers = commands.add_parser(
        "teachers", help="score the models a study's method pre-trained (FedKD's organ teachers) on its test set"
    )
    teachers.add_argument("run_dir", type=Path, help="the study's results folder (with its checkpoints/)")
    teachers.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    teachers.set_defaults(handler=_teachers)

    bench = commands.add_parser("bench", help="benchmarks that write results/bench_*.json")
    bench_commands = bench.add_subparsers(metavar="BENCHMARK")
    bench.set_defaults(handler=_group_help(bench))
    inference = bench_commands.add_parser(
        "inference", help="multi-head model (one pass) vs one single-organ model per organ"
    )
    inference.add_argument("--out", type=Path, default=Path("results/bench_inference.json"),
                           help="JSON to write (default results/bench_inference.json)")
    inference.add_argument("--repeats", type=int, default=3, help="timed passes per volume; the median is kept (default 3)")
    inference.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    inference.set_defaults(handler=_bench_inference)
    evaluation = bench_commands.add_parser(
        "evaluation", help="one evaluation (predict, map back, score) against the sliding-window inference"
    )
    evaluation.add_argument("--volumes", type=int, default=3, help="clinical-size test volumes (default 3)")
    evaluation.add_argument("--shape", type=int, nargs=3, default=[512, 512, 100], metavar=("X", "Y", "Z"),
                            help="voxels of each volume (default 512 512 100)")
    evaluation.add_argument("--spacing", type=float, nargs=3, default=[0.75, 0.75, 2.5], metavar=("X", "Y", "Z"),
                            help="voxel size in mm of each volume (default 0.75 0.75 2.5)")
    evaluation.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as one hospital actor)")
    evaluation.add_argument("--no-full-grid", action="store_true",
                            help="skip timing the former whole-grid scoring of the first volume")
    evaluation.add_argument("--work-dir", type=Path, default=Path("results/bench_evaluation_work"),
                            help="where the volumes are written once (default results/bench_evaluation_work)")
    evaluation.add_argument("--out", type=Path, default=Path("results/bench_evaluation.json"),
                            help="JSON to write (default results/bench_evaluation.json)")
    evaluation.set_defaults(handler=_bench_evaluation)
    scale = bench_commands.add_parser(
        "scale", help="efficiency E, launch to first round and peak memory at 10-1000 hospitals"
    )
    scale.add_argument("--scenarios", nargs="+", default=None, metavar="TOTALxPER_ROUND",
                       help="e.g. 100x50 (default: 10x10 100x10 100x50 100x100 1000x10 1000x50 1000x100)")
    scale.add_argument("--rounds", type=int, default=5, help="rounds per scenario (default 5)")
    scale.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance (= hospital actors)")
    scale.add_argument("--running-ray", action="store_true",
                       help="start one local Ray before the scenarios, as `ray start` or a sweep would, so the "
                            "time to the first round leaves out Ray's own start (default: each study starts its own)")
    scale.add_argument("--cli-runs", type=int, default=5,
                       help="times the first scenario runs as `fedray run` in a new process (the others once), for "
                            "the time from typing the command to the first round; 0 skips these runs")
    scale.add_argument("--bare-repeats", type=int, default=20,
                       help="bare network updates timed before and again after the scenarios, for the floor of "
                            "efficiency_vs_bare_update (default 20 each time)")
    scale.add_argument("--work-dir", type=Path, default=Path("results/bench_scale_work"),
                       help="data, runs and MLflow store of the scenarios (default results/bench_scale_work)")
    scale.add_argument("--out", type=Path, default=Path("results/bench_scale.json"),
                       help="JSON to write; the plot goes beside it as .png (default results/bench_scale.json)")
    scale.set_defaults(handler=_bench_scale)
    data_path = bench_commands.add_parser(
        "data-path", help="patch sampling (MONAI vs case store), local vs bare step, peak memory on clinical-size CT"
    )
    data_path.add_argument("--cases", type=int, nargs="+", default=[3, 30], metavar="N",
                           help="cases per site of the memory studies (3 sites each; default 3 30)")
    data_path.add_argument("--batches", type=int, default=30, help="timed batches per sampler (default 30)")
    data_path.add_argument("--work-dir", type=Path, default=Path("results/bench_data_path_work"),
                           help="sites, case store and runs (default results/bench_data_path_work)")
    data_path.add_argument("--out", type=Path, default=Path("results/bench_data_path.json"),
                           help="JSON to write (default results/bench_data_path.json)")
    data_path.set_defaults(handler=_bench_data_path)

    peers = bench_commands.add_parser(
        "peers", help="fedray's round time beside Flower's and pfl-research's on the scale workload, in one run"
    )
    peers.add_argument("--scenarios", nargs="+", default=["100x100", "100x10"], metavar="TOTALxPER_ROUND",
                       help="federation sizes and hospitals per round (default 100x100 100x10)")
    peers.add_argument("--rounds", type=int, default=5, help="rounds per run (default 5)")
    peers.add_argument("--cpus", type=int, default=2, help="CPUs every framework gets (default 2)")
    peers.add_argument("--peer-python", default=sys.executable,
                       help="interpreter whose environment has the peers (Flower pins another Ray than fedray's: "
                            "see README, Peers); default this one")
    peers.add_argument("--peers", nargs="+", default=["flower", "pfl"], choices=["flower", "pfl"],
                       help="peers to run where installed (default flower pfl)")
    peers.add_argument("--repeats", type=int, default=2,
                       help="paired repeats per scenario: the bare floor, then fedray and each peer once, fedray "
                            "first in odd repeats and last in even ones (default 2)")
    peers.add_argument("--bare-repeats", type=int, default=20,
                       help="bare network updates timed at the start of every repeat (default 20)")
    peers.add_argument("--work-dir", type=Path, default=Path("results/bench_peers_work"),
                       help="data, runs and peer files (default results/bench_peers_work)")
    peers.add_argument("--out", type=Path, default=Path("results/bench_peers.json"),
                       help="JSON to write; the plot goes beside it as .png (default results/bench_peers.json)")
    peers.set_defaults(handler=_bench_peers)
    ceilings = bench_commands.add_parser(
        "ceilings", help="what a `bench peers` run's measured floors allow: the E ceiling and the E the targets need"
    )
    ceilings.add_argument("runs", type=Path, nargs="+", help="`fedray bench peers` JSONs")
    ceilings.add_argument("--out", type=Path, default=None, help="JSON to write the ceilings to (default: print only)")
    ceilings.set_defaults(handler=_bench_ceilings)

    data = commands.add_parser("data", help="prepare datasets")
    data_commands = data.add_subparsers(metavar="KIND")
    data.set_defaults(handler=_group_help(data))
    phantom = data_commands.add_parser("phantom", help="write a synthetic abdominal CT phantom (MSD layout)")
    phantom.add_argument("--out", required=True, type=Path, help="output folder")
    phantom.add_argument("--hospitals", type=int, default=7, help="number of hospitals (default 7)")
    phantom.add_argument("--organs-per-hospital", type=int, help="organs each hospital labels")
    phantom.add_argument("--cases", type=int, help="cases per hospital")
    _add_volume_options(phantom)
    phantom.set_defaults(handler=_data_phantom)
    realistic = data_commands.add_parser(
        "realistic", help="deform TotalSegmentator's example CT into partially labelled sites (MSD layout)"
    )
    realistic.add_argument("--out", required=True, type=Path, help="output folder (site_*/ and test/)")
    realistic.add_argument("--cache-dir", type=Path, default=Path("results/data/totalsegmentator"),
                           help="where the downloaded example CT is kept (default results/data/totalsegmentator)")
    realistic.add_argument("--sites", type=int, help="partially labelled sites")
    realistic.add_argument("--max-organs-per-site", type=int, help="each site labels 1 to this many organs")
    realistic.add_argument("--cases", type=int, help="cases per site")
    _add_volume_options(realistic)
    realistic.set_defaults(handler=_data_realistic)
    return parser


def _add_volume_options(data_parser: argparse.ArgumentParser) -> None:
    """The test-set size, voxel grid and data seed of `fedray data phantom` and `realistic`.

    Like the data commands' other size options they have no default here: one left out keeps its
    field's default (data.phantom, federation.rule, CohortSpec), so each default is written once,
    where the data is described (importing CohortSpec here would load numpy and scipy for every
    command).
    """
    data_parser.add_argument("--test-cases", type=int, help="fully-labelled held-out cases")
    data_parser.add_argument("--shape", type=int, nargs=3, metavar=("X", "Y", "Z"))
    data_parser.add_argument("--spacing", type=float, nargs=3, metavar=("SX", "SY", "SZ"))
    data_parser.add_argument("--seed", type=int)


def _run(args: argparse.Namespace) -> int:
    from fedray.config import with_absolute_paths
    from fedray.errors import ConfigError

    if args.repro is not None:
        return _repro(args.repro)
    if args.config is None:
        raise ConfigError("fedray run needs a study YAML file (or --repro RUN_DIR).")
    config = with_absolute_paths(_config_of(args.config, args.overrides))
    if args.dry_run:
        from fedray.data.federation import check_layout

        check_layout(config)
        print(_resolved_yaml(config), end="")
        console.print(f"config and data layout are valid; fedray run would write {config.run_dir}", highlight=False)
        return 0
    if not args.overwrite:
        config = _unused_run_name(config)
    return _run_config(config, resume=False)


def _config_of(path: str, items: list[str]):
    from fedray.config import load_config

    fragments = [a for a in items if "=" not in a]
    overrides = [a for a in items if "=" in a]
    return load_config([path, *fragments], overrides)


def _resolved_yaml(config) -> str:
    import yaml

    from fedray.configtypes import to_data

    return yaml.safe_dump(to_data(config), sort_keys=False, default_flow_style=None)  # short lists on one line


def _unused_run_name(config):
    """The config itself if its run folder is new, else the same study as NAME-2, NAME-3, ... (the
    first whose folder does not exist), so a run never overwrites another's results or MLflow name."""
    from dataclasses import replace

    if not (config.run_dir / "config.resolved.yaml").exists():
        return config
    base, n = config.run_name, 2
    while (config.run_dir.parent / f"{base}-{n}").exists():
        n += 1
    renamed = replace(config, tracking=replace(config.tracking, run_name=f"{base}-{n}"))
    console.print(f"[yellow]{config.run_dir} exists; this run is {renamed.run_name} "
                  f"(--overwrite reuses the old name)[/]", highlight=False)
    return renamed


def _config_show(args: argparse.Namespace) -> int:
    print(_resolved_yaml(_config_of(args.config, args.overrides)), end="")  # stdout, so it can be piped to a file
    return 0


def _methods(args: argparse.Namespace) -> int:
    import dataclasses

    from fedray.methods import METHODS

    fragments = Path(__file__).resolve().parents[1] / "configs" / "methods"
    table = Table(title="fedray methods (method.name, method.params)")
    for column in ("method", "parameters (default)", "model output", "fragments"):
        table.add_column(column)
    for name, spec in sorted(METHODS.items()):
        params = ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(spec.params)) or "-"
        using = sorted(p.name for p in fragments.glob("*.yaml") if f"name: {name}" in p.read_text()) if fragments.is_dir() else []
        table.add_row(name, params, spec.required_output or "any", ", ".join(using) or "-")
    Console().print(table)  # stdout
    return 0


def _group_help(parser: argparse.ArgumentParser):
    """A command group's handler when no subcommand is given: its own help, exit code 2."""

    def show(args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    return show


def _repro(run_dir: Path) -> int:
    import pandas as pd

    from fedray.reporting.repro import compare_rounds

    original = _load_run(run_dir)
    rerun = _load_run(
        run_dir,
        [
            f"tracking.run_name={original.run_name}__repro",
            f"tracking.experiment={original.tracking.experiment}__repro",  # never mixed into reports
            "tracking.parent_run_id=null",
        ],
    )
    _run_config(rerun, resume=False)
    table = compare_rounds(pd.read_csv(run_dir / "rounds.csv"), pd.read_csv(rerun.run_dir / "rounds.csv"))
    out = Table(title=f"{original.run_name} reproduced as {rerun.run_name}")
    for column in table.columns:
        out.add_column(column)
    for row in table.itertuples(index=False):
        out.add_row(*[f"{v:.3g}" if isinstance(v, float) else str(v) for v in row])
    Console().print(out)
    mismatched = (table["match"] == "NO").sum()
    Console().print("every metric matches" if not mismatched else f"{mismatched} metrics differ")
    return 0 if not mismatched else 1


def _resume(args: argparse.Namespace) -> int:
    from fedray.tracking.checkpoint import checkpoint_path

    config = _load_run(args.run_dir)
    if args.rounds is not None:
        from fedray.config import extension_problem
        from fedray.errors import ConfigError

        problem = extension_problem(replace(config, rounds=args.rounds), config.rounds)
        if problem:
            raise ConfigError(f"cannot train {args.run_dir} on to {args.rounds} rounds: {problem}.")
        config = _load_run(args.run_dir, [f"rounds={args.rounds}"])
    if not checkpoint_path(args.run_dir).is_file():
        # A study writes its first checkpoint as soon as its MLflow run exists (before any training),
        # so a folder without one holds nothing to continue: start it again, in the same folder.
        console.print(f"[yellow]{args.run_dir} has no checkpoint yet (stopped before its MLflow run opened); "
                      "starting it from the beginning.[/]", highlight=False)
        return _run_config(config, resume=False)
    return _run_config(config, resume=True)


def _load_run(run_dir: Path, overrides: list[str] | None = None):
    """A run's resolved config, relocated to where the folder is now (it may have been moved)."""
    from fedray.config import load_run_config

    return load_run_config(run_dir, overrides or ())


def _run_config(config, resume: bool) -> int:
    summary = _study_with_progress(config, resume)
    _print_summary(config, summary)
    return 0


def _study_with_progress(config, resume: bool, stop: threading.Event | None = None) -> dict:
    """Run (or resume) one study through `run_experiment` with a progress bar; returns its summary."""
    from fedray.simulation.run import run_experiment

    with _progress_bar() as bar:
        task = bar.add_task("starting Ray, preparing data", total=config.rounds)

        def show_folders(done: int, total: int) -> None:
            bar.update(task, description=f"starting Ray, preparing data: {done}/{total} folders")

        def ready(prepared) -> None:
            bar.update(task, description="starting the driver and hospital actors")
            for bad in prepared.skipped:
                console.print(f"[yellow]skipped[/] {bad.file}: {bad.reason}")
            console.print(
                f"{'Resuming' if resume else 'Study'} [bold]{config.run_name}[/]: {len(prepared.hospitals)} hospitals, "
                f"method {config.method.name}, {config.rounds} rounds, seed {config.seed}"
            )

        def show(p) -> None:
            bar.update(task, completed=_rounds_done(p), description=_progress_text(p))

        def show_cases(done: int, total: int) -> None:
            bar.update(task, description=f"preprocessing cases into the case store: {done}/{total}")

        try:
            summary = run_experiment(
                config, resume=resume, on_progress=show, on_data=show_folders, on_ready=ready, stop=stop,
                on_preprocess=show_cases,
            )
        except BaseException:
            bar.remove_task(task)  # the error is the last word, not a half-done bar
            raise
        bar.update(task, completed=config.rounds)
    return summary


def _cells_with_progress(bar: Progress):
    """A sweep's run_cell for cells running at once: each running cell is one line of `bar`."""
    from fedray.simulation.run import run_experiment

    data_lock = threading.Lock()  # cells share the data cache: the first writes a phantom site, the rest reuse it

    def run_cell(config, resume: bool, stop: threading.Event) -> dict:
        name = config.run_name
        task = bar.add_task(f"{name} · preparing data", total=config.rounds)

        def ready(prepared) -> None:
            for bad in prepared.skipped:
                console.print(f"[yellow]skipped[/] {bad.file}: {bad.reason}")
            bar.update(task, description=f"{name} · {'resuming' if resume else 'waiting for its actors'}")

        def show(p) -> None:
            bar.update(task, completed=_rounds_done(p), description=f"{name} · {_progress_text(p)}")

        def show_cases(done: int, total: int) -> None:
            bar.update(task, description=f"{name} · preprocessing cases: {done}/{total}")

        try:
            return run_experiment(
                config, resume=resume, on_progress=show, on_ready=ready, stop=stop, data_lock=data_lock,
                on_preprocess=show_cases,
            )
        finally:
            bar.remove_task(task)  # the sweep prints the cell's outcome

    return run_cell


def _rounds_done(p) -> float:
    return max(p.round - 1 + (p.clients_done / p.clients if p.clients else 0), 0)


def _sweep(args: argparse.Namespace) -> int:
    from fedray.errors import ConfigError
    from fedray.experiments.sweep import cell_share, load_sweep, plan_cells, run_sweep
    from fedray.simulation.cluster import cluster_resources, init_ray
    from fedray.simulation.run import sigterm_as_ctrl_c
    from fedray.tracking.mlflow import close_run, default_tracking_uri, open_parent_run

    sweep = load_sweep(args.sweep)
    if args.status:
        return _sweep_status(sweep, plan_cells(sweep))
    parallel = sweep.parallel if args.parallel is None else args.parallel
    if parallel < 1:
        raise ConfigError(f"--parallel must be >= 1, not {parallel}.")
    cells = plan_cells(sweep)
    first = cells[0].config
    uri = first.tracking.uri or default_tracking_uri(first.tracking.results_dir)
    parent = {}

    def open_parent(name: str) -> str:
        parent["id"] = open_parent_run(uri, name, Path(first.tracking.results_dir) / "mlartifacts", name)
        return parent["id"]

    def on_cell(index: int, cell, status: str) -> None:
        console.print(f"[{index + 1}/{len(cells)}] {cell.run_name}: {status}", highlight=False)

    init_ray(first.resources)  # once for the whole sweep
    sigterm_as_ctrl_c()  # after Ray's own handler: a job scheduler's SIGTERM stops a parallel sweep as Ctrl-C does
    cluster = cluster_resources()
    cells = [replace(cell, config=cell_share(cell.config, cluster, parallel)) for cell in cells]
    at_once = f", up to {parallel} at once on {cluster.get('CPU', 0):g} CPUs, {cluster.get('GPU', 0):g} GPUs"
    console.print(f"Sweep [bold]{sweep.name}[/]: {len(cells)} studies{at_once if parallel > 1 else ''}")
    try:
        if parallel == 1:
            status = run_sweep(sweep, cells, _study_with_progress, open_parent, on_cell)
        else:
            with _progress_bar() as bar:
                status = run_sweep(sweep, cells, _cells_with_progress(bar), open_parent, on_cell, parallel)
    except KeyboardInterrupt:
        if "id" in parent:
            close_run(uri, parent["id"], "KILLED")
        console.print(f"[yellow]Sweep stopped; running studies stopped after a checkpoint. "
                      f"Continue with: fedray sweep {args.sweep}[/]", highlight=False)
        return 130
    failed = [name for name, s in status.items() if s.startswith("failed")]
    close_run(uri, parent["id"], "FAILED" if failed else "FINISHED")
    table = Table(title=f"sweep {sweep.name}")
    table.add_column("study")
    table.add_column("status")
    for name, outcome in status.items():
        colour = "red" if outcome.startswith("failed") else "green" if outcome == "done" else "dim"
        table.add_row(name, f"[{colour}]{outcome}[/]")
    Console().print(table)
    console.print(
        f"{len(status) - len(failed)} of {len(status)} studies finished; report: fedray report --experiment {sweep.name}"
    )
    return 1 if failed else 0


def _sweep_status(sweep, cells) -> int:
    from fedray.experiments.sweep import FINISHED, IN_PROGRESS, NOT_STARTED, RUNNING, hours_left, sweep_status

    rows = sweep_status(cells)
    table = Table(title=f"sweep {sweep.name}")
    for column in ("study", "state", "rounds", "plateau", "last-window Dice %", "minutes"):
        table.add_column(column, justify="left" if column in ("study", "state") else "right")
    for row in rows:
        colour = {FINISHED: "green", IN_PROGRESS: "yellow", RUNNING: "cyan", NOT_STARTED: "dim"}.get(row["state"], "red")
        state = row["state"] + (f" ({row['why']})" if row["why"] else "")
        rounds = "" if row["rounds"] is None else f"{row['rounds']}/{row['cap']}"
        table.add_row(row["study"], f"[{colour}]{state}[/]", rounds,
                      "" if row["plateau_round"] is None else str(row["plateau_round"]),
                      "" if math.isnan(row["dice_last_window"]) else f"{100 * row['dice_last_window']:.1f}",
                      "" if math.isnan(row["wall_s"]) else f"{row['wall_s'] / 60:.0f}")
    Console().print(table)
    finished = sum(r["state"] == FINISHED for r in rows)
    spent = sum(r["wall_s"] for r in rows if not math.isnan(r["wall_s"])) / 3600
    left = hours_left(rows)
    estimate = ("" if math.isnan(left) else
                f"; about {left:.1f} h left at the finished studies' median time per variant")
    console.print(f"{finished} of {len(rows)} studies finished, {spent:.1f} h of study time so far{estimate}.",
                  highlight=False)
    return 0


def _predict(args: argparse.Namespace) -> int:
    from fedray.inference.predict import eval_with, input_files, load_trained, predict_files

    from fedray.errors import ConfigError
    from fedray.inference.predict import pooled_dice, study_test_set

    if (args.input is None) == (not args.test_set):
        raise ConfigError("fedray predict needs --input PATH or --test-set (one of them).")
    if args.source.startswith(("runs:/", "models:/")):  # a logged MLflow model: it names its own round
        from fedray.tracking.mlflow import default_tracking_uri
        from fedray.tracking.model_logging import load_logged_study

        if args.round_index is not None:
            raise ConfigError("--round does not apply to an MLflow model URI: it names its model (model_round_N).")
        trained = load_logged_study(args.source, args.tracking_uri or default_tracking_uri("results"), args.device)
    else:
        trained = load_trained(_run_folder(args.source, args.tracking_uri), args.round_index, args.device)
    inputs = input_files(study_test_set(trained.config) if args.test_set else args.input)
    eval_cfg = eval_with(trained.config.eval, {"overlap": args.overlap, "sw_batch_size": args.sw_batch_size,
                                               "roi_size": tuple(args.roi_size) if args.roi_size else None})
    console.print(f"Segmenting {len(inputs)} volume(s) with [bold]{trained.config.run_name}[/] "
                  f"({trained.config.method.name}, round {trained.round}) on {trained.device}", highlight=False)
    with _progress_bar() as bar:
        task = bar.add_task("segmenting", total=len(inputs))

        def done(result) -> None:
            if result.error is not None:
                console.print(f"[red]not segmented[/] {result.error}", highlight=False)
            elif args.overlay:
                from fedray.reporting.overlay import prediction_overlay

                prediction_overlay(result.input, result.output, trained, args.out)
            bar.advance(task)

        results = predict_files(trained, inputs, args.out, eval_cfg, on_volume=done)
    failed = [r for r in results if r.error is not None]
    console.print(f"{len(results) - len(failed)} of {len(results)} label maps in {args.out} "
                  f"(names in {args.out / 'labels.json'})", highlight=False)
    if args.test_set and not failed:
        dice = pooled_dice({r.input.name: r.output for r in results}, trained.config)
        table = Table(title="Dice on the test set (pooled counts)")
        table.add_column("organ")
        table.add_column("Dice %", justify="right")
        for organ, value in dice.items():
            table.add_row(organ, "-" if math.isnan(value) else f"{100 * value:.1f}")
        Console().print(table)
    return 1 if failed else 0


def _export(args: argparse.Namespace) -> int:
    from fedray.inference.bundle import export_bundle

    out = export_bundle(args.run_dir, args.bundle, args.round_index)
    console.print(f"MONAI bundle in {out}; run it with:\n  python -m monai.bundle run --bundle_root {out} "
                  f"--config_file {out}/configs/inference.json --meta_file {out}/configs/metadata.json "
                  "--dataset_dir CT.nii.gz --output_dir SEG", highlight=False)
    return 0


def _teachers(args: argparse.Namespace) -> int:
    import json

    from fedray.inference.pretrained import score_pretrained

    rows = score_pretrained(args.run_dir)
    table = Table(title=f"Pre-trained models of {args.run_dir}, on its test set (pooled Dice)")
    for column in ("model", "organ", "used for it", "Dice %", "per-volume Dice %", "HD95 mm"):
        table.add_column(column, justify="left" if column in ("model", "organ") else "right", no_wrap=column == "model")
    for r in rows:
        table.add_row(r["model"], r["organ"], "yes" if r["used_for_organ"] else "no", f"{100 * r['dice']:.1f}",
                      f"{100 * r['dice_per_volume']:.1f}", f"{r['hd95_mm']:.1f}")
    console.print(table)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"run": str(args.run_dir), "rows": rows}, indent=2) + "\n")
        console.print(f"rows in {args.out}", highlight=False)
    return 0


def _round_choice(text: str) -> int | str:
    if text == "best":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is neither a round number nor 'best'") from None


def _run_folder(source: str, tracking_uri: str | None) -> Path:
    """A study's folder from its path or its MLflow run id."""
    from fedray.errors import ConfigError

    path = Path(source)
    if path.is_dir():
        return path
    from fedray.tracking.query import run_folder

    folder = run_folder(tracking_uri, source)
    if folder is None:
        raise ConfigError(f"'{source}' is neither a run folder nor an MLflow run id with a run folder on this machine.")
    return folder


def _report(args: argparse.Namespace) -> int:
    from fedray.messages import Metric
    from fedray.reporting.report import config_differences, tidy_runs, write_report
    from fedray.tracking.mlflow import default_tracking_uri
    from fedray.tracking.query import metric_histories, study_runs

    uri = args.tracking_uri or default_tracking_uri("results")
    names = [Metric.DICE_MEAN.value, Metric.BYTES_TOTAL.value, Metric.BYTES_DOWN.value, Metric.TRAIN_LOSS.value]
    if args.runs:
        from fedray.reporting.run_folders import folder_runs, study_folders

        raw, histories = folder_runs(study_folders(args.runs), names)
    else:
        raw = study_runs(uri, args.experiment)
    runs = tidy_runs(raw, args.experiment)
    differences = config_differences(raw, runs)
    if args.reference not in set(runs["variant"]):
        console.print(f"[yellow]The reference variant '{args.reference}' is not among the runs "
                      f"({', '.join(sorted(set(runs['variant'])))}): no paired comparison. "
                      f"Choose one with --reference.[/]", highlight=False)
    if not args.runs:
        histories = metric_histories(uri, list(runs["run_id"]), names)
    out = args.out or Path("results") / args.experiment
    overlays = None
    if not args.no_pictures:
        from fedray.reporting.overlay import method_overlays

        overlays = method_overlays(runs, out, tracking_uri=uri)
        for note in overlays.notes:
            console.print(f"[yellow]{note}[/]", highlight=False)
    report = write_report(runs, histories, args.experiment, out, args.reference, overlays=overlays,
                          differences=differences)
    console.print(f"{len(runs)} studies, {runs['variant'].nunique()} variants -> {report.markdown}")
    return 0


def _bare_spec(config) -> dict:
    """The bare update's spec for a scale workload (its study organs counted as the study does)."""
    from fedray.benchmarks.bare import spec_of

    return spec_of(config, len(config.data.organs))


def _bench_scale(args: argparse.Namespace) -> int:
    import json
    import platform
    import statistics

    from fedray.benchmarks.bare import bare_update_seconds, concurrent_bare_floor
    from fedray.benchmarks.scale import SCENARIOS, plot, summarise, workload
    from fedray.simulation.cluster import init_ray, ray_version, shutdown_ray

    try:
        scenarios = [tuple(int(n) for n in s.lower().split("x")) for s in args.scenarios] if args.scenarios else SCENARIOS
    except ValueError:
        raise FedrayError(f"--scenarios takes TOTALxPER_ROUND values such as 100x50, got {args.scenarios}") from None
    if args.cli_runs < 0:
        raise FedrayError(f"--cli-runs takes a count >= 0, got {args.cli_runs}")
    if args.bare_repeats < 1:
        raise FedrayError(f"--bare-repeats takes a count >= 1, got {args.bare_repeats}")
    work_dir = args.work_dir.resolve()
    spec = _bare_spec(workload(10, 10, args.rounds, work_dir, args.cpus))
    floors: list[dict] = []

    def time_floor() -> tuple[float, float]:
        """The bare update timed alone and in one process per hospital actor at once, just before a
        scenario: each scenario's E is against the floor of its own minutes (the machine drifts)."""
        with console.status(f"timing {args.bare_repeats} bare network updates (1 thread)..."):
            alone = bare_update_seconds(spec, args.bare_repeats)
        with console.status(f"timing {args.bare_repeats} bare network updates in {args.cpus} processes at once..."):
            concurrent = concurrent_bare_floor(spec, args.bare_repeats, args.cpus)  # one per hospital actor
        floors.append({"s": alone, "concurrent": concurrent})
        return statistics.median(alone), concurrent["bare_concurrent_update_s"]

    started = args.running_ray and init_ray(workload(10, 10, args.rounds, work_dir, args.cpus).resources)
    try:
        results = _scale_scenarios(scenarios, args, work_dir, time_floor)
    finally:
        if started:
            shutdown_ray()
    with console.status(f"timing {args.bare_repeats} bare network updates again (1 thread)..."):
        bare_after = bare_update_seconds(spec, args.bare_repeats)
    bare_before, concurrent = floors[0]["s"], floors[0]["concurrent"]
    record = {
        "benchmark": "scale",
        "workload": "MONAI U-Net (8,16,32,64)/(2,2,2), 32^3, 4 cases/hospital, batch 2, 2 steps (one epoch), FedAvg",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "ray": ray_version()},
        "ray": "running before launch" if args.running_ray else "started by each study",
        "bare_update": {
            "what": "the same network, loss, optimiser, batch and steps in a plain loop over in-memory tensors, "
                    "1 thread, no fedray code, timed again just before each scenario: a scenario's floor is the "
                    "median of its own timings (bare_update_s in its row; all of them in `before_each_scenario`)",
            "before_each_scenario": floors,
            "s_median_before": statistics.median(bare_before),
            "s_median_after": statistics.median(bare_after),
            "s_before": bare_before,
            "s_after": bare_after,
            "concurrent": {
                "what": f"the same bare update in {args.cpus} processes at once (one per hospital actor, 1 thread "
                        "each), timed while all run; s is the harmonic mean of the processes' medians, the "
                        "floor of efficiency_vs_bare_concurrent",
                "s": concurrent["bare_concurrent_update_s"],
                "s_medians": concurrent["bare_concurrent_s_medians"],
                "s_each": concurrent["bare_concurrent_s"],
                "processes": concurrent["bare_concurrent_processes"],
            },
        },
        "targets": summarise(results),
        "scenarios": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    plot(results, args.out.with_suffix(".png"))
    console.print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


def _scale_scenarios(
    scenarios: list[tuple[int, int]], args: argparse.Namespace, work_dir: Path,
    time_floor: Callable[[], tuple[float, float]] | None = None,
) -> list[dict]:
    """Each scenario's figures; `time_floor` (bare update alone, and concurrent) is called right before
    each scenario's timed run."""
    import shutil

    from fedray.benchmarks.scale import cli_launch_to_first_round, run_scenario, workload
    from fedray.data.case_store import Recipe, stored_cases
    from fedray.data.datasets import ensure_stored
    from fedray.data.federation import prepare_hospitals
    from fedray.simulation.launch import run_study

    results = []
    for total, per_round in scenarios:
        config = workload(total, per_round, args.rounds, work_dir, args.cpus)
        with console.status(f"{total} hospitals: writing phantom data and the preprocessed cache (not timed)..."):
            for hospital in prepare_hospitals(config).hospitals:  # stored after the first scenario of this size
                for ref in stored_cases(hospital, config.data):
                    ensure_stored(ref, Recipe.of(config.data))
        shutil.rmtree(config.run_dir, ignore_errors=True)
        bare_update_s, bare_concurrent_update_s = time_floor() if time_floor is not None else (None, None)
        with console.status(f"{total} hospitals, {per_round} per round, {args.rounds} rounds..."):
            result = run_scenario(config, run_study, prepare_hospitals, bare_update_s, bare_concurrent_update_s)
        if args.cli_runs and not args.running_ray:  # `fedray run` as a user types it: each scenario once, the first more
            # One round: the time to the first round does not depend on how many follow.
            cli_config = workload(total, per_round, 1, work_dir, args.cpus, run_suffix="-fedray-run")
            runs = args.cli_runs if not results else 1
            result["cli_launch_to_first_round_s"] = []
            for attempt in range(1, runs + 1):
                shutil.rmtree(cli_config.run_dir, ignore_errors=True)
                with console.status(f"{total} hospitals, {per_round} per round: `fedray run` {attempt}/{runs}..."):
                    result["cli_launch_to_first_round_s"].append(cli_launch_to_first_round(cli_config, work_dir))
        results.append(result)
        cli = result.get("cli_launch_to_first_round_s")
        console.print(
            f"{total:>5} hospitals, {per_round:>3} per round: E = {result.get('efficiency_vs_bare_update', math.nan):.3f} "
            f"vs the bare update alone ({result.get('efficiency_vs_bare_concurrent', math.nan):.3f} vs "
            f"{args.cpus} at once, {result['efficiency_vs_own_update']:.3f} vs fedray's own), "
            f"{result.get('overhead_per_task_ms', math.nan):.0f} ms overhead per task, "
            f"round {result['round_s_median']:.2f} s, first round after {result['launch_to_first_round_s']:.1f} s"
            + (f" ({'/'.join(f'{t:.1f}' for t in cli)} s as `fedray run`)" if cli else "")
            + f", peak {result['peak_pss_gb']:.2f} GB (PSS)"
        )
    return results


def _bench_data_path(args: argparse.Namespace) -> int:
    import json
    import os
    import platform

    from fedray.benchmarks import data_path as bench

    work = args.work_dir.resolve()
    record: dict = {"benchmark": "data_path", "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                    "memory": []}

    def write() -> None:  # after each part: a slow one keeps the others
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2) + "\n")

    # Memory first, while this process (the launcher, part of the measured tree) has not imported torch.
    for n in args.cases:
        with console.status(f"writing 3 clinical-size sites of {n} cases (not timed)..."):
            sites, test = bench.write_clinical_sites(work / "sites", 3, n, 3)
        config = bench.study_config(work, sites, test, f"data-path-{n}")
        with console.status(f"study: 3 sites x {n} clinical-size cases (preprocessing included)..."):
            result = bench.peak_study(config)
        record["memory"].append(result)
        console.print(f"3 x {n} cases: peak {result['peak_pss_gb']:.2f} GB PSS ({result['peak_rss_gb']:.2f} GB RSS) "
                      f"after preprocessing; {result['preprocessed_cases']} cases preprocessed "
                      f"(peak {result['preprocess_peak_pss_gb'] or 0:.2f} GB PSS, "
                      f"{result['preprocess_s_per_case'] or 0:.1f} s each); study {result['wall_s']:.0f} s")
        write()
    # After every memory study, whose first start read each file in full and remembered it.
    record["checks"] = []
    for n in args.cases:
        sites, test = bench.write_clinical_sites(work / "sites", 3, n, 3)
        with console.status(f"case checks of 3 sites x {n} cases: every file in full, then headers only..."):
            checks = bench.time_checks(bench.study_config(work, sites, test, f"data-path-{n}"))
        record["checks"].append(checks)
        console.print(f"3 x {n} cases: checks {checks['full_s']:.1f} s reading {checks['cases_checked']} cases in "
                      f"full, {checks['headers_only_s']:.2f} s from headers once remembered")
        write()

    import torch

    from fedray.data.case_store import Recipe, open_case, stored_cases
    from fedray.data.datasets import ensure_stored, read_stored_case
    from fedray.data.federation import prepare_hospitals

    torch.set_num_threads(1)
    record["machine"]["torch"] = torch.__version__
    with console.status("preprocessing the timing cases (not timed)..."):
        sites, test = bench.write_clinical_sites(work / "sites", 3, min(args.cases), 3)
        picked = []
        for config in (bench.study_config(work, sites, test, "data-path-timing"),
                       bench.study_config(work, [test], test, "data-path-small", clinical=False)):  # 64x64x48
            [hospital, *_] = prepare_hospitals(config).hospitals
            picked.append(ensure_stored(stored_cases(hospital, config.data)[0], Recipe.of(config.data)))
    record["sampler"], record["step"] = [], []
    for ref, patch in zip(picked, (64, 32)):
        with console.status(f"sampler and step at {patch}^3..."):
            sampler = bench.time_samplers(read_stored_case(ref), open_case(ref), patch, args.batches)
            step = bench.time_steps(open_case(ref), patch, steps=4, repeats=3)
        record["sampler"].append(sampler)
        record["step"].append(step)
        console.print(f"{patch}^3 on {sampler['volume']}: sampler {sampler['monai_s_median'] * 1e3:.1f} ms "
                      f"(MONAI) vs {sampler['store_s_median'] * 1e3:.2f} ms (store) per batch; local step "
                      f"{step['local_step_s_median']:.3f} s vs bare {step['bare_step_s_median']:.3f} s "
                      f"= {step['ratio']:.3f}x")
        write()
    bench.plot(record, args.out.with_suffix(".png"))
    console.print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


def _peer_arrays(case) -> dict:
    """A stored case as the peers' export takes it: (1, X, Y, Z) image and label."""
    return {"image": case.image[None], "label": case.label[None]}


def _bench_peers(args: argparse.Namespace) -> int:
    import json
    import platform
    import shutil
    import statistics

    from fedray.benchmarks import peers as peer_bench
    from fedray.benchmarks.bare import bare_update_seconds, concurrent_bare_floor, round_floor_s
    from fedray.benchmarks.scale import run_scenario, workload
    from fedray.data.case_store import Recipe, open_case, stored_cases
    from fedray.data.datasets import ensure_stored
    from fedray.data.federation import prepare_hospitals
    from fedray.simulation.cluster import ray_version
    from fedray.simulation.launch import run_study

    try:
        scenarios = [tuple(int(n) for n in s.lower().split("x")) for s in args.scenarios]
    except ValueError:
        raise FedrayError(f"--scenarios takes TOTALxPER_ROUND values such as 100x10, got {args.scenarios}") from None
    if args.repeats < 1 or args.bare_repeats < 1:
        raise FedrayError("--repeats and --bare-repeats take counts >= 1")
    work_dir = args.work_dir.resolve()
    available = {}
    for name in args.peers:
        version = peer_bench.peer_version(args.peer_python, peer_bench.PEERS[name])
        if version is None:
            console.print(f"[yellow]{name} is not installed for {args.peer_python}: skipped[/]")
        else:
            available[name] = version
    spec = _bare_spec(workload(10, 10, args.rounds, work_dir, args.cpus))
    floors: list[dict] = []  # every repeat's bare floor, timed just before its runs

    def time_floor() -> dict:
        with console.status(f"timing {args.bare_repeats} bare network updates (1 thread)..."):
            alone = bare_update_seconds(spec, args.bare_repeats)
        with console.status(f"timing {args.bare_repeats} bare network updates in {args.cpus} processes at once..."):
            concurrent = concurrent_bare_floor(spec, args.bare_repeats, args.cpus)  # one per slot, 1 thread each
        floor = {"bare_update_s": alone, "bare_update_s_median": statistics.median(alone), **concurrent}
        floors.append(floor)
        return floor

    results = []
    for total, per_round in scenarios:
        config = workload(total, per_round, args.rounds, work_dir, args.cpus)
        with console.status(f"{total} hospitals: phantom data, the preprocessed cache and the peers' copy (not timed)..."):
            recipe = Recipe.of(config.data)
            cases = [
                [_peer_arrays(open_case(ensure_stored(ref, recipe))) for ref in stored_cases(h, config.data)]
                for h in prepare_hospitals(config).hospitals
            ]
            data = peer_bench.export_hospitals(cases, work_dir / f"hospitals-{total}.npz")
        peer_spec = {**spec, "data": str(data), "total": total, "per_round": per_round, "rounds": args.rounds,
                     "cpus": args.cpus, "seed": config.seed}
        fedray_runs: list[dict] = []
        peer_runs: dict[str, list[dict]] = {name: [] for name in available}
        scenario_floors = []

        def fedray_run(index: int, floor: dict) -> None:
            run_config = workload(total, per_round, args.rounds, work_dir, args.cpus, run_suffix=f"-peers-{index}")
            shutil.rmtree(run_config.run_dir, ignore_errors=True)
            with console.status(f"fedray, {total} hospitals, {per_round} per round (repeat {index})..."):
                figures = run_scenario(run_config, run_study, prepare_hospitals, floor["bare_update_s_median"],
                                       floor["bare_concurrent_update_s"], memory=False)  # as the peers are sampled
            fedray_runs.append({**figures, **peer_bench.fedray_round_figures(figures)})

        def peer_run(name: str, index: int, floor: dict) -> None:
            with console.status(f"{name}, {total} hospitals, {per_round} per round (repeat {index})..."):
                figures = peer_bench.run_peer(peer_bench.PEERS[name], args.peer_python, peer_spec,
                                              work_dir / f"peers-{total}x{per_round}")
            # the peer's E: this repeat's floors over its median round
            figures["efficiency_vs_bare_update"] = (
                round_floor_s(per_round, args.cpus, floor["bare_update_s_median"]) / figures["round_s_median"])
            figures["efficiency_vs_bare_concurrent"] = (
                round_floor_s(per_round, args.cpus, floor["bare_concurrent_update_s"]) / figures["round_s_median"])
            peer_runs[name].append(figures)

        for index in range(1, args.repeats + 1):
            floor = time_floor()
            scenario_floors.append(floor)
            if index % 2:  # ABBA: fedray first, then last, so a drift over the repeats hits both alike
                fedray_run(index, floor)
            for name in available:
                peer_run(name, index, floor)
            if not index % 2:
                fedray_run(index, floor)
        medians = [run["round_s_median"] for run in fedray_runs]
        bare_s = statistics.median(f["bare_update_s_median"] for f in scenario_floors)
        concurrent_s = statistics.median(f["bare_concurrent_update_s"] for f in scenario_floors)
        peer_figures = {
            name: {**runs[0], "round_s_median": statistics.median(r["round_s_median"] for r in runs),
                   "cpu_ms_per_task": statistics.median(r["cpu_ms_per_task"] for r in runs),
                   "launch_to_first_round_done_s": statistics.median(r["launch_to_first_round_done_s"] for r in runs),
                   "efficiency_vs_bare_update": statistics.median(r["efficiency_vs_bare_update"] for r in runs),
                   "efficiency_vs_bare_concurrent": statistics.median(r["efficiency_vs_bare_concurrent"] for r in runs),
                   "runs": runs}
            for name, runs in peer_runs.items()
        }
        scenario = {
            "total": total, "per_round": per_round, "rounds": args.rounds, "cpus": args.cpus,
            "repeats": args.repeats,
            "bare_update_s_medians": [f["bare_update_s_median"] for f in scenario_floors],
            "bare_concurrent_update_s": [f["bare_concurrent_update_s"] for f in scenario_floors],
            "bare_floor_round_s": round_floor_s(per_round, args.cpus, bare_s),
            "bare_concurrent_floor_round_s": round_floor_s(per_round, args.cpus, concurrent_s),
            "fedray": {"round_s_median": statistics.median(medians), "runs_round_s_median": medians},
            "fedray_runs": fedray_runs,
            "peers": peer_figures,
            "paired": {name: peer_bench.paired_ratios(fedray_runs, runs) for name, runs in peer_runs.items()},
        }
        scenario["ceilings"] = peer_bench.ceilings(scenario)
        results.append(scenario)
        peer_medians = {n: "/".join(f"{r['round_s_median']:.2f}" for r in runs) for n, runs in peer_runs.items()}
        console.print(
            f"{total} hospitals, {per_round} per round: fedray {'/'.join(f'{m:.2f}' for m in medians)} s"
            + "".join(f", {n} {m} s" for n, m in peer_medians.items())
            + "".join(f"; fedray/{n} paired {p['median']:.2f}" for n, p in scenario["paired"].items())
            + f" (median round; bare floor {scenario['bare_floor_round_s']:.2f} s alone, "
            + f"{scenario['bare_concurrent_floor_round_s']:.2f} s {args.cpus} at once); CPU per task: fedray "
            + "/".join(f"{r['cpu_ms_per_task']:.0f}" for r in fedray_runs)
            + "".join(f", {n} {p['cpu_ms_per_task']:.0f}" for n, p in peer_figures.items()) + " ms"
        )
    record = {
        "benchmark": "peers",
        "workload": "MONAI U-Net (8,16,32,64)/(2,2,2), 32^3, 4 cases/hospital, batch 2, 2 steps (one epoch), FedAvg",
        "round_time": "from one round's end to the next (the driver's work between rounds counts); fedray's is its "
                      "median time/train_s plus the mean gap between rounds",
        "order": "per scenario, each repeat: the bare floor, then fedray and the peers, fedray first in odd "
                 "repeats and last in even ones; fedray/peer ratios paired repeat by repeat (`paired`)",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "ray": ray_version()},
        "peer_python": args.peer_python,
        "peer_versions": available,
        "bare_floors": floors,  # each repeat's: the update alone and in one process per CPU at once
        "targets": peer_bench.summarise(results),
        "scenarios": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    peer_bench.plot(results, args.out.with_suffix(".png"))
    _print_ceilings(results)
    console.print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


def _print_ceilings(scenarios: list[dict]) -> None:
    """One line per scenario: the E ceiling against the bare update, fedray's E against the concurrent
    floor, and the E the ratio targets would need (`peers.ceilings`)."""
    for scenario in scenarios:
        c = scenario["ceilings"]
        needs = "".join(f"; for {n} at {v['target_ratio']:g}x it would need {v['median']:.2f}"
                        for n, v in c["fedray_needs_e_vs_bare_concurrent"].items())
        console.print(f"{scenario['total']}x{scenario['per_round']}: a framework adding nothing scores E "
                      f"{c['zero_overhead_e_vs_bare']['median']:.2f} against the bare update alone; fedray's E "
                      f"against the concurrent floor {c['fedray_e_vs_bare_concurrent']['median']:.2f}{needs} "
                      f"(medians over {len(c['zero_overhead_e_vs_bare']['per_repeat'])} repeats)")


def _bench_ceilings(args: argparse.Namespace) -> int:
    import json

    from fedray.benchmarks import peers as peer_bench

    runs = []
    for path in args.runs:
        try:
            record = json.loads(path.read_text())
            scenarios = record["scenarios"]
            if record.get("benchmark") != "peers":
                raise KeyError("benchmark")
            for scenario in scenarios:
                scenario["ceilings"] = peer_bench.ceilings(scenario)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise FedrayError(f"{path} is not a readable `fedray bench peers` JSON ({error!r})") from None
        console.print(f"{path}:")
        _print_ceilings(scenarios)
        runs.append({"of": str(path),
                     "scenarios": [{k: s[k] for k in ("total", "per_round", "cpus", "repeats", "ceilings")} for s in scenarios],
                     "targets": peer_bench.summarise(scenarios)})
    if args.out is not None:
        command = " ".join(["fedray bench ceilings", *map(str, args.runs), "--out", str(args.out)])
        out = {"benchmark": "ceilings", "command": command, "doc": peer_bench.ceilings.__doc__, "runs": runs}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2) + "\n")
        console.print(f"wrote {args.out}")
    return 0


def _bench_evaluation(args: argparse.Namespace) -> int:
    import json

    from fedray.benchmarks.evaluation import run

    result = run(args.work_dir, args.volumes, tuple(args.shape), tuple(args.spacing), args.threads, not args.no_full_grid)
    console.print(
        f"{args.volumes} volumes {tuple(args.shape)}: inference {result['inference_total_s']:.1f} s, "
        f"evaluation {result['evaluation_total_s']:.1f} s, ratio x{result['evaluation_over_inference']:.2f} "
        f"(target <= x{result['target']})"
    )
    if result["full_grid_scoring_s_first_volume"] is not None:
        console.print(
            f"scoring the first volume: {result['region_scoring_s_first_volume']:.1f} s on organ regions, "
            f"{result['full_grid_scoring_s_first_volume']:.1f} s on the whole grid"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    console.print(f"-> {args.out}")
    return 0


def _bench_inference(args: argparse.Namespace) -> int:
    import json

    import torch

    from fedray.benchmarks.inference import compare
    from fedray.config import EvalConfig, ModelConfig, config_from_data
    from fedray.data.datasets import load_folder
    from fedray.data.federation import prepare_hospitals

    torch.set_num_threads(args.threads)
    study = config_from_data({"name": "bench", "federation": {"rule": {"count": 7, "cases": 1}}})
    _, test_dir = prepare_hospitals(study)
    test_cases = load_folder(test_dir, study.data.organs, study.data.hu_window, preprocess=study.data.preprocess)
    volumes = [case["image"][None] for case in test_cases]
    settings = [
        # the benchmark width, over the whole 4-volume phantom test set
        (ModelConfig(name="multihead_unet", output="sigmoid", channels=(8, 16, 32, 64), blocks=(1, 1, 1, 1)),
         EvalConfig(roi_size=(32, 32, 32), overlap=0.25), volumes, args.repeats),
        # the paper's width and tile (17.29 M parameters, 64x128x128, 50 % overlap), one volume
        (ModelConfig(name="multihead_unet", output="sigmoid", channels=(32, 64, 128, 256, 256),
                     blocks=(1, 2, 2, 2, 2), norm_groups=16),
         EvalConfig(roi_size=(64, 128, 128), overlap=0.5), volumes[:1], 1),
    ]
    results = []
    for model_cfg, eval_cfg, vols, repeats in settings:
        result = compare(model_cfg, len(study.data.organs), vols, eval_cfg, repeats)
        console.print(
            f"widths {model_cfg.channels}: multi-head {result['multihead_s_per_volume']:.3f} s/volume, "
            f"7 single-organ models {result['single_models_s_per_volume']:.3f} s/volume, "
            f"speed-up x{result['speedup']:.2f}"
        )
        results.append(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"device": "cpu", "results": results}, indent=2))
    console.print(f"-> {args.out}")
    return 0


def _progress_text(p) -> str:
    if p.phase == "preparing":  # the method's preparation jobs (FedKD's teachers), before round 1
        return f"preparing · jobs {p.clients_done}/{p.clients}" + _running_text(p)
    if p.phase not in ("training", "evaluating", "done"):
        return p.phase
    loss = f"{p.train_loss:.3f}" if math.isfinite(p.train_loss) else "-"
    dice = f"{100 * p.dice_mean:.1f}%" if math.isfinite(p.dice_mean) else "-"
    eta = f"{p.eta_s:.0f}s" if math.isfinite(p.eta_s) else "-"
    text = f"round {p.round}/{p.rounds} · clients {p.clients_done}/{p.clients} · loss {loss} · Dice {dice} · ETA {eta}"
    return text + (_running_text(p) if p.phase == "training" else "")


def _running_text(p) -> str:
    """The hospitals (or preparation jobs) still training, the furthest behind first ('' if none reported)."""
    if not p.running:
        return ""
    behind = sorted(p.running, key=lambda r: (r[1] / r[2], r[0]))
    shown = ", ".join(f"{h} {done}/{steps} steps" for h, done, steps in behind[:3])
    return f" · {shown}" + (f" (+{len(behind) - 3} more)" if len(behind) > 3 else "")


def _progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(bar_width=16), TimeElapsedColumn(), console=console, transient=False
    )


def _print_summary(config, summary: dict) -> None:
    table = Table(title=f"{config.run_name}: final global model on the held-out set")
    table.add_column("organ")
    table.add_column("Dice %", justify="right")
    for organ in config.data.organs:
        value = summary[f"dice/{organ}"]
        table.add_row(organ, "n/a" if value is None or math.isnan(value) else f"{100 * value:.1f}")
    table.add_row("[bold]mean[/]", f"[bold]{100 * summary['dice/mean']:.1f}[/]")
    table.add_row("untrained model, mean", f"{100 * summary['dice/mean_untrained']:.1f}")
    out = Console()
    out.print(table)
    out.print(
        f"communicated {summary['comm/bytes_total'] / 1e6:.1f} MB in {summary.get('rounds_trained', config.rounds)} rounds "
        f"(model {summary['params_total']:,} parameters, {summary['bytes_per_model'] / 1e6:.2f} MB); "
        f"inference {summary['infer/s_per_volume']:.2f} s/volume"
    )
    out.print(
        f"time: {summary['wall_s']:.0f} s in the study (evaluation, preparation and rounds, all sessions), "
        f"{time.monotonic() - _STARTED:.0f} s for this command (with Ray's start and the data)"
    )
    out.print(f"results: {summary['run_dir']}  ·  MLflow run {summary['run_id']} in {summary['tracking_uri']}")


def _data_phantom(args: argparse.Namespace) -> int:
    from fedray.config import config_from_data
    from fedray.data.federation import prepare_hospitals

    config = config_from_data(
        {
            "name": "phantom",
            "data": {
                "cache_dir": str(args.out),
                "phantom": _given(args, "shape", "spacing", "test_cases", "seed"),
            },
            "federation": {"rule": {"count": args.hospitals, **_given(args, "organs_per_hospital", "cases")}},
        }
    )
    with console.status("Writing phantom...") as status:
        hospitals, test_dir = prepare_hospitals(
            config, progress=lambda done, total: status.update(f"Writing phantom: {done}/{total} folders")
        )
    for hospital in hospitals:
        print(f"{hospital.folders[0]}  organs={','.join(hospital.organs)}  cases={hospital.num_cases}")
    print(f"{test_dir}  (fully labelled test set)")
    return 0


def _data_realistic(args: argparse.Namespace) -> int:
    from fedray.data.realistic import CohortSpec, build_cohort, copy_licence
    from fedray.data.totalseg import CREDIT, SDIST_SHA256, SDIST_URL, load_example

    given = _given(args, "shape", "spacing", "sites", "test_cases", "max_organs_per_site", "seed",
                   cases_per_site="cases")
    spec = CohortSpec(**given)
    with _progress_bar() as bar:
        task = bar.add_task("TotalSegmentator example CT", total=None)
        source = load_example(args.cache_dir, progress=lambda done, total: bar.update(task, completed=done, total=total))
        bar.update(task, total=1, completed=1)
        if source.missing:
            console.print(f"[yellow]warning:[/] the example has no {', '.join(source.missing)}; left out of the cohort.")
        task = bar.add_task("writing cases", total=spec.sites * spec.cases_per_site + spec.test_cases)
        provenance = {"sdist": SDIST_URL, "sdist_sha256": SDIST_SHA256, "credit": CREDIT}
        sites, test_dir = build_cohort(
            args.out, source.image, source.label, source.spacing, spec, organs=source.organs,
            provenance=provenance, progress=lambda done, total: bar.update(task, completed=done),
        )
    copy_licence(args.cache_dir / "LICENSE", args.out)
    for folder, plan in sites:
        numbering = ", ".join(f"{organ}={value}" for organ, value in plan.label_values.items())
        print(f"{folder}  labels: {numbering}  cases={spec.cases_per_site}")
    print(f"{test_dir}  (fully labelled test set, {spec.test_cases} cases)")
    console.print(f"Source: {CREDIT}", highlight=False)
    return 0


def _given(args: argparse.Namespace, *options: str, **renamed: str) -> dict:
    """The options the user gave, by field name (`renamed`: field=option).

    The options left out are not in it, so they keep their field's default.
    """
    names = {**{option: option for option in options}, **renamed}
    values = {field: getattr(args, option) for field, option in names.items()}
    return {field: tuple(v) if isinstance(v, list) else v for field, v in values.items() if v is not None}


def _quiet_libraries() -> None:
    """Keep library chatter (MONAI, MLflow, Ray) out of the progress display."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    for name in ("mlflow", "alembic", "ray", "monai"):
        logging.getLogger(name).setLevel(logging.ERROR)


if __name__ == "__main__":
    sys.exit(main())
