"""`fedray bench scale`: simulation efficiency, launch-to-first-round and peak memory, 10 to 1,000 hospitals.

The workload is fixed by the scale issue: a MONAI U-Net with channels (8, 16, 32, 64) and strides
(2, 2, 2) on 32^3 phantom volumes, 4 cases per hospital, batch 2, one local epoch (2 steps), FedAvg.

Efficiency E = floor / wall, against two floors. `efficiency_vs_bare_update`: each round's floor is
ceil(hospitals / slots) bare network updates (`fedray.benchmarks.bare`: the same network, loss,
optimiser, batch and steps in a plain loop over in-memory tensors, 1 thread, no fedray code), timed in
the same run; this floor sees everything fedray adds, inside a hospital's update and around it.
`efficiency_vs_own_update`: each round's floor is max(slowest hospital's local update, total hospital
compute / slots), with fedray's own updates timed by its actors (the `time/compute_*` round metrics);
it sees only what fedray adds around its updates. `efficiency_vs_bare_concurrent`: as
`efficiency_vs_bare_update`, but with the bare update timed in as many processes at once as the
study has hospital actors (`bare.concurrent_bare_floor`), which share the cores' caches and memory
bandwidth as the actors do: what no framework can beat on the machine. Wall is everything from the first round's dispatch
to the last round's new global weights except evaluation (the summary's `rounds_wall_s`): the
driver's work between rounds (logging, the next broadcast) counts. `efficiency_rounds` divides the
own-update floor by the rounds alone instead (the sum of `time/train_s`, dispatch to new global
weights). Slots = hospital actors (one CPU each). `overhead_per_task_ms`: the wall's slot time per
hospital task (wall x slots / tasks) less one bare update.
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import psutil

from fedray.benchmarks.bare import round_floor_s
from fedray.config import StudyConfig, config_from_data, with_absolute_paths
from fedray.messages import Metric

# (total hospitals, hospitals per round): the 10 / 100 / 1,000 with 10 / 50 / 100 per round.
SCENARIOS: tuple[tuple[int, int], ...] = ((10, 10), (100, 10), (100, 50), (100, 100), (1000, 10), (1000, 50), (1000, 100))


def workload(total: int, per_round: int, rounds: int, work_dir: Path, cpus: int, run_suffix: str = "") -> StudyConfig:
    """The fixed scale workload as a study config (phantom data cached under `work_dir`)."""
    return with_absolute_paths(
        config_from_data(
            {
                "name": f"scale-{total}x{per_round}",
                "rounds": rounds,
                "data": {
                    "cache_dir": str(work_dir / "data"),
                    "phantom": {"shape": [32, 32, 32], "test_cases": 2},
                    "patch_size": [32, 32, 32],
                },
                "federation": {
                    "rule": {"count": total, "organs_per_hospital": 1, "cases": 4},
                    "clients_per_round": per_round,
                },
                "model": {"name": "unet", "channels": [8, 16, 32, 64], "strides": [2, 2, 2], "num_res_units": 0},
                "method": {"name": "fedavg"},
                "train": {"local_steps": 2, "batch_size": 2, "lr": 0.01},  # 4 cases / batch 2 = one epoch
                "eval": {"every": rounds, "roi_size": [32, 32, 32]},
                "resources": {"num_cpus": cpus, "cpus_per_actor": 1},
                "tracking": {
                    "results_dir": str(work_dir / "runs"),
                    "uri": f"sqlite:///{work_dir}/runs/mlflow.db",
                    "experiment": "bench_scale",
                    "run_name": f"scale-{total}x{per_round}{run_suffix}",
                    "checkpoint_every": 0,
                },
            }
        )
    )


class PeakMemory:
    """Samples this process and all its descendants (Ray's GCS, raylet, workers, actors) in a thread.

    Reports the peak of the summed PSS (proportional set size: shared pages split between the
    processes that map them, so torch's libraries or Ray's object store are not counted once per
    process) and of the summed RSS (which does count them repeatedly), in bytes. Also keeps each
    sample's CPU seconds per process, for the CPU a span used (`cpu_seconds`).

    Reading PSS makes the kernel walk each process's page tables: a sample of a 2-actor study cost
    about 36 ms of CPU on the 2-core benchmark machine, over a tenth of a core at 4 samples a second,
    taken from the workload it measures. So the sampling thread runs at the lowest priority (Linux
    lets a thread have its own) and its own CPU is left out of this process's seconds. Lowest is not
    nothing: against Ray's workers, which Ray starts at niceness 15, a nice-19 thread still gets about
    30 % of a contested core (CFS weights 15 against 36; a 100 × 10 study's launcher measured 0.15 of
    a core in session 16), and a walk holds the sampled process's memory map lock, which slows the
    sampled process whatever its priority. With `memory` False (the peers benchmark, which compares
    rounds, not memory) a sample reads each process's CPU times only, from /proc/<pid>/stat, which
    walks no page tables.
    """

    def __init__(self, interval_s: float = 0.25, memory: bool = True) -> None:
        self.interval_s = interval_s
        self.memory = memory
        self.peak_pss = 0
        self.peak_rss = 0
        self.cpu: list[tuple[float, dict[int, float]]] = []  # (wall time, pid -> user + system CPU seconds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self, own_cpu_s: float = 0.0) -> None:
        """One sample of the whole process tree; `own_cpu_s`: the sampling thread's CPU so far, not counted."""
        me = psutil.Process()
        pss = rss = 0
        cpu = {}
        for process in [me, *me.children(recursive=True)]:
            try:
                info = process.memory_full_info() if self.memory else None
                times = process.cpu_times()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue  # a worker that just exited
            if info is not None:
                pss += getattr(info, "pss", info.rss)
                rss += info.rss
            cpu[process.pid] = times.user + times.system - (own_cpu_s if process is me else 0.0)
        self.peak_pss = max(self.peak_pss, pss)
        self.peak_rss = max(self.peak_rss, rss)
        self.cpu.append((time.time(), cpu))

    def cpu_seconds(self, start: float, end: float) -> float:
        """CPU seconds the process tree used between wall times `start` and `end` (to the nearest samples
        at or before each; a process that started in the span counts from zero)."""
        def at(moment: float) -> dict[int, float]:
            return max((s for s in self.cpu if s[0] <= moment), key=lambda s: s[0], default=(0.0, {}))[1]

        first, last = at(start), at(end)
        return sum(seconds - first.get(pid, 0.0) for pid, seconds in last.items())

    def _run(self) -> None:
        if sys.platform == "linux":  # elsewhere the call would lower the whole process (the launcher)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        while not self._stop.is_set():
            self.sample(time.thread_time())
            self._stop.wait(self.interval_s)


def efficiency(
    rounds: pd.DataFrame, slots: int, wall_s: float, bare_update_s: float | None = None,
    bare_concurrent_update_s: float | None = None,
) -> dict:
    """E against fedray's own updates (and over the rounds alone) from rounds.csv, against the bare
    update of `bare_update_s` seconds alone and of `bare_concurrent_update_s` seconds run by `slots`
    processes at once, when given; see the module docstring."""
    floor = rounds[[Metric.COMPUTE_MAX_S.value]].join(rounds[Metric.COMPUTE_SUM_S.value] / slots).max(axis=1)
    train = rounds[Metric.TRAIN_S.value]
    own_update_s = float((rounds[Metric.COMPUTE_SUM_S.value] / rounds["clients"]).median())
    figures = {
        "efficiency_vs_own_update": float(floor.sum() / wall_s),
        "efficiency_rounds": float(floor.sum() / train.sum()),
        "floor_s": float(floor.sum()),
        "wall_s": wall_s,
        "rounds_s": float(train.sum()),
        "round_s_median": float(train.median()),
        "round_s_mean_wall": wall_s / len(rounds),
        "hospital_update_s_median": own_update_s,
    }
    def bare_floor_s_of(update_s: float) -> float:  # the rounds' floor at `update_s` a bare update
        return sum(round_floor_s(int(n), slots, update_s) for n in rounds["clients"])

    if bare_update_s is not None:
        bare_floor_s = bare_floor_s_of(bare_update_s)
        tasks = int(rounds["clients"].sum())
        figures |= {
            "efficiency_vs_bare_update": bare_floor_s / wall_s,
            "bare_floor_s": bare_floor_s,
            "bare_update_s": bare_update_s,
            "overhead_per_task_ms": (wall_s * slots / tasks - bare_update_s) * 1000,
            "own_update_overhead_ms": (own_update_s - bare_update_s) * 1000,
        }
    if bare_concurrent_update_s is not None:
        concurrent_floor_s = bare_floor_s_of(bare_concurrent_update_s)
        figures |= {
            "efficiency_vs_bare_concurrent": concurrent_floor_s / wall_s,
            "bare_concurrent_floor_s": concurrent_floor_s,
            "bare_concurrent_update_s": bare_concurrent_update_s,
        }
    return figures


def run_scenario(
    config: StudyConfig, run: Callable[[StudyConfig], dict], prepare: Callable, bare_update_s: float | None = None,
    bare_concurrent_update_s: float | None = None, memory: bool = True,
) -> dict:
    """Run one study with memory (or, `memory` False, CPU only) sampling; returns its figures.

    `prepare` builds the hospitals (data cached beforehand, so generation is not timed) and `run`
    starts Ray, runs the study and shuts Ray down; launch = just before `prepare`, in this process,
    which has imported fedray already (`cli_launch_to_first_round` times a new process).
    """
    with PeakMemory(interval_s=0.25 if memory else 0.1, memory=memory) as usage:
        launched = time.time()
        hospitals, test_dir = prepare(config)
        summary = run(config, hospitals, test_dir)
    rounds = pd.read_csv(config.run_dir / "rounds.csv")
    slots = len(summary["actors"])
    cpu_s = usage.cpu_seconds(summary["first_round_at"], summary["first_round_at"] + summary["rounds_wall_s"])
    return {
        "hospitals": config.federation.rule.count,
        "per_round": config.federation.clients_per_round,
        "rounds": config.rounds,
        "actors": slots,
        **efficiency(rounds, slots, summary["rounds_wall_s"], bare_update_s, bare_concurrent_update_s),
        "launch_to_first_round_s": summary["first_round_at"] - launched,
        "peak_pss_gb": usage.peak_pss / 1e9 if memory else None,
        "peak_rss_gb": usage.peak_rss / 1e9 if memory else None,
        # CPU of every process of the study (launcher, driver, actors, Ray's own) over its rounds: unlike the
        # wall, it does not grow when other work on the machine takes the cores
        "cpu_s_rounds": cpu_s,
        "cpu_ms_per_task": cpu_s / int(rounds["clients"].sum()) * 1000,
    }


def cli_launch_to_first_round(config: StudyConfig, work_dir: Path) -> float:
    """Seconds from starting `fedray run` (a new process, as a user types it) to its first round.

    Adds what `run_scenario` leaves out: Python's start and the command's imports, and loading the
    config. The data is cached by then, as for a user's second run.
    """
    import json
    import subprocess
    import sys

    from fedray.config import save_config

    path = work_dir / f"{config.run_name}.yaml"
    save_config(config, path)
    launched = time.time()
    done = subprocess.run([sys.executable, "-m", "fedray.cli", "run", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"fedray run {path} failed:\n{done.stderr[-3000:]}")
    return json.loads((config.run_dir / "summary.json").read_text())["first_round_at"] - launched


def summarise(results: list[dict]) -> dict:
    """The issue's targets checked against the measured figures (None where a scenario was not run)."""

    def pick(total: int, per_round: int) -> dict | None:
        return next((r for r in results if r["hospitals"] == total and r["per_round"] == per_round), None)

    def e_of(per_round: int, key: str = "efficiency_vs_own_update") -> float | None:
        values = [r[key] for r in results if r["per_round"] == per_round and key in r]
        return statistics.median(values) if values else None

    big = pick(1000, 100)
    cli = [t for r in results for t in r.get("cli_launch_to_first_round_s", [])]
    return {
        "E_vs_bare_update_at_100_per_round (target >= 0.9)": e_of(100, "efficiency_vs_bare_update"),
        "E_vs_bare_update_at_10_per_round (target >= 0.8)": e_of(10, "efficiency_vs_bare_update"),
        "E_vs_bare_concurrent_at_100_per_round": e_of(100, "efficiency_vs_bare_concurrent"),
        "E_vs_bare_concurrent_at_10_per_round": e_of(10, "efficiency_vs_bare_concurrent"),
        "E_vs_own_update_at_100_per_round (target >= 0.85)": e_of(100),
        "E_vs_own_update_at_10_per_round (target >= 0.7)": e_of(10),
        "first_round_s_fedray_run_median (target <= 10)": statistics.median(cli) if cli else None,
        "first_round_s_fedray_run_max": max(cli, default=None),
        "first_round_s_in_process_max": max((r["launch_to_first_round_s"] for r in results), default=None),
        "peak_pss_gb_1000x100 (target <= 3)": big["peak_pss_gb"] if big else None,
    }


def plot(results: list[dict], path: Path) -> None:
    """Round time against hospitals per round (one line per federation size), E per scenario, and the
    time from launch to the first round per scenario against the 10 s target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = pd.DataFrame(results)
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(16, 4.4))
    for total, group in table.groupby("hospitals"):
        group = group.sort_values("per_round")
        left.plot(group["per_round"], group["round_s_median"], marker="o", label=f"{total} hospitals")
    left.set(xlabel="hospitals per round", ylabel="median round time (s, training only)",
             title="Round time against hospitals per round")
    left.legend()
    labels = [f"{r.hospitals}x{r.per_round}" for r in table.itertuples()]
    positions = range(len(labels))
    width = 0.27
    middle.bar([x - width for x in positions], table["efficiency_vs_own_update"], width, color="tab:blue",
               label="vs fedray's own update")
    if "efficiency_vs_bare_update" in table:
        middle.bar(list(positions), table["efficiency_vs_bare_update"], width, color="tab:purple",
                   label="vs the bare network update alone")
    if "efficiency_vs_bare_concurrent" in table:
        middle.bar([x + width for x in positions], table["efficiency_vs_bare_concurrent"], width, color="tab:pink",
                   label="vs the bare update, one per actor at once")
    middle.axhline(0.9, color="tab:green", linestyle="--", label="target vs bare 0.9 (100 per round)")
    middle.axhline(0.8, color="tab:orange", linestyle="--", label="target vs bare 0.8 (10 per round)")
    middle.set(ylim=(0, 1.05), xticks=list(positions), xlabel="hospitals x per round", ylabel="E = floor / wall",
               title="Simulation efficiency")
    middle.set_xticklabels(labels)
    middle.tick_params(axis="x", rotation=45)
    middle.legend(loc="lower right", fontsize="small")
    right.scatter(positions, table["launch_to_first_round_s"], marker="s", color="tab:gray", label="in the benchmark's process")
    if "cli_launch_to_first_round_s" in table:
        for x, times in zip(positions, table["cli_launch_to_first_round_s"]):
            if isinstance(times, list) and times:
                right.scatter([x] * len(times), times, color="tab:blue", alpha=0.7,
                              label="`fedray run`, a new process" if x == 0 else None)
    right.axhline(10, color="tab:red", linestyle="--", label="target 10 s")
    right.set(xticks=list(positions), ylim=(0, None), xlabel="hospitals x per round", ylabel="seconds",
              title="Launch to the first round")
    right.set_xticklabels(labels, rotation=45)
    right.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
