"""Peer frameworks on the scale workload, each in its own interpreter: what to run, and their round times.

A peer runs as a subprocess of the interpreter named by `--peer-python` (a peer may pin another Ray
than fedray's), on the same hospitals' arrays (`export_hospitals`) and the same update spec
(`fedray.benchmarks.bare`); it writes the wall time of each round's end, from which the round times
and the time from launch to its first round follow.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CHECKOUT = Path(__file__).resolve().parents[3]  # the folder holding this fedray package


@dataclass(frozen=True)
class Peer:
    """One peer framework: its distribution (for its version) and the command that runs its script."""

    name: str
    distribution: str
    module: str

    def command(self, python: str, spec: Path, out: Path, cpus: int) -> list[str]:
        if self.name == "pfl":  # one process per CPU, as pfl-research simulates in parallel
            return [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={cpus}",
                    "-m", self.module, str(spec), str(out)]
        return [python, "-m", self.module, str(spec), str(out)]


PEERS = {
    "flower": Peer("flower", "flwr", "fedray.benchmarks.peers.flower"),
    "pfl": Peer("pfl", "pfl", "fedray.benchmarks.peers.pfl_research"),
}


def peer_version(python: str, peer: Peer) -> str | None:
    """The peer's installed version in `python`'s environment, or None when it is not installed there."""
    probe = f"import importlib.metadata as m; print(m.version({peer.distribution!r}))"
    try:
        done = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def export_hospitals(cases: list[list[dict]], path: Path) -> Path:
    """Every hospital's training arrays (fedray's preprocessed cases) as one .npz of stacked images and labels,
    (hospitals, cases, 1, X, Y, Z); all hospitals need the same number of equally shaped cases."""
    images = np.stack([np.stack([c["image"] for c in hospital]) for hospital in cases]).astype(np.float32)
    labels = np.stack([np.stack([c["label"] for c in hospital]) for hospital in cases]).astype(np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, images=images, labels=labels)
    return path


def round_figures(round_s: list[float], launched: float, first_round_end: float) -> dict:
    """Median and mean round and the time from launch to the first round's end."""
    return {
        "round_s": round_s,
        "round_s_median": statistics.median(round_s),
        "round_s_mean": statistics.fmean(round_s),
        "launch_to_first_round_done_s": first_round_end - launched,
    }


def run_peer(peer: Peer, python: str, spec: dict, work_dir: Path, timeout_s: float = 1800, attempts: int = 3) -> dict:
    """Run one peer on `spec` (with its `data`) and return its figures; raises with its output's tail on failure.

    A peer that fails is run again, up to `attempts` runs in all (pfl-research 0.6.0 aborted at exit once in
    session 16's benchmark windows, "terminate called without an active exception", and twice in a row
    in session 17's first window, which lost it), so a crash does not lose a benchmark's other repeats;
    the failed runs' output tails are in `failed_attempts`.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    spec_path = work_dir / f"{peer.name}-spec.json"
    out = work_dir / f"{peer.name}-rounds.json"
    spec_path.write_text(json.dumps(spec, indent=2) + "\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(CHECKOUT), os.environ.get("PYTHONPATH")]))}
    from fedray.benchmarks.scale import PeakMemory

    failed: list[str] = []
    while True:
        out.unlink(missing_ok=True)
        with PeakMemory(interval_s=0.1, memory=False) as usage:  # CPU only, as fedray's runs here
            launched = time.time()
            done = subprocess.run(peer.command(python, spec_path, out, spec["cpus"]), capture_output=True, text=True,
                                  env=env, cwd=work_dir, timeout=timeout_s)
            finished = time.time()
        if done.returncode == 0 and out.exists():
            break
        failed.append(f"{peer.name} failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
        if len(failed) >= attempts:
            raise RuntimeError(failed[-1])
    record = json.loads(out.read_text())
    trained_from = record["round_ends"][0] - record["round_s"][0]
    cpu_s = usage.cpu_seconds(trained_from, record["round_ends"][-1])
    return {
        "peer": peer.name,
        "version": record["version"],
        **{k: v for k, v in record.items() if k not in {"peer", "version", "round_s", "round_ends"}},
        **round_figures(record["round_s"], launched, record["round_ends"][0]),
        "process_s": finished - launched,
        "failed_attempts": failed,
        "cpu_s_rounds": cpu_s,  # every process of the peer's tree (and this one), first round's start to last end
        "cpu_ms_per_task": cpu_s / (spec["per_round"] * spec["rounds"]) * 1000,
    }


def fedray_round_figures(scenario: dict) -> dict:
    """fedray's figures as the peers' are measured: a round from one round's end to the next, so the driver's
    work between rounds counts (its median round plus the mean gap between rounds)."""
    rounds = scenario["rounds"]
    gap = (scenario["wall_s"] - scenario["rounds_s"]) / max(1, rounds - 1)
    return {"round_s_median": scenario["round_s_median"] + gap, "round_s_mean": scenario["wall_s"] / rounds,
            "between_rounds_s_mean": gap}


def cpu_ratio(scenario: dict, peer: str) -> float | None:
    """fedray's CPU per hospital task (median over its runs) over the peer's."""
    if peer not in scenario["peers"]:
        return None
    return statistics.median(r["cpu_ms_per_task"] for r in scenario["fedray_runs"]) / scenario["peers"][peer]["cpu_ms_per_task"]


def paired_ratios(fedray_runs: list[dict], peer_runs: list[dict]) -> dict:
    """fedray's median round over the peer's, repeat by repeat (run k against run k, minutes apart at
    most), and their median: steadier than a ratio of medians on a machine whose speed drifts."""
    per_repeat = [f["round_s_median"] / p["round_s_median"] for f, p in zip(fedray_runs, peer_runs)]
    return {"per_repeat": per_repeat, "median": statistics.median(per_repeat)}


RATIO_TARGETS = {"pfl": 0.95, "flower": 0.6}  # the fedray/peer round targets (#13)


def ceilings(scenario: dict) -> dict:
    """What the scenario's measured floors allow, repeat by repeat (medians beside): the bounds the targets
    sit against on this machine, from figures the run measured, nothing modelled.

    - `zero_overhead_e_vs_bare`: the E against the bare update alone (the issue's floor) of a framework
      that adds nothing to one process per CPU updating at once: that repeat's bare update alone over
      the concurrent one. No framework that runs one process per CPU scores above it but by noise.
    - `<framework>_e_vs_bare_concurrent`: each framework's concurrent floor round over its median round
      (a round from one round's end to the next, as the ratios are taken).
    - `fedray_needs_e_vs_bare_concurrent[peer]`: the E fedray would need for fedray/peer at the target
      ratio: the peer's E over the ratio. Above 1, fedray would have to update faster than the bare
      network update itself.
    """
    # bare.round_floor_s's arithmetic (bare imports torch, which reading a run's JSON does not need)
    updates_per_slot = math.ceil(scenario["per_round"] / scenario["cpus"])
    alone, concurrent = scenario["bare_update_s_medians"], scenario["bare_concurrent_update_s"]

    def with_median(values: list[float]) -> dict:
        return {"per_repeat": values, "median": statistics.median(values)}

    # a peer's run holds its E already; fedray's own `efficiency_vs_bare_concurrent` is over its rounds
    # alone, so here it is taken as the peers' is, over its median round from one round's end to the next
    fedray = [updates_per_slot * c / run["round_s_median"]
              for c, run in zip(concurrent, scenario["fedray_runs"], strict=True)]
    peers = {name: [run["efficiency_vs_bare_concurrent"] for run in figures["runs"]]
             for name, figures in scenario["peers"].items()}
    return {
        "zero_overhead_e_vs_bare": with_median([a / c for a, c in zip(alone, concurrent, strict=True)]),
        "fedray_e_vs_bare_concurrent": with_median(fedray),
        **{f"{name}_e_vs_bare_concurrent": with_median(values) for name, values in peers.items()},
        "fedray_needs_e_vs_bare_concurrent": {
            name: {"target_ratio": RATIO_TARGETS[name], **with_median([e / RATIO_TARGETS[name] for e in values])}
            for name, values in peers.items() if name in RATIO_TARGETS
        },
    }


def summarise(scenarios: list[dict]) -> dict:
    """fedray's median round over each peer's, per scenario, against the issue's targets (None where not
    run): the median of the repeats' paired ratios where the scenario has them, else the ratio of medians."""

    def ratio(per_round: int, peer: str) -> float | None:
        row = next((s for s in scenarios if s["per_round"] == per_round), None)
        if row is None or peer not in row["peers"]:
            return None
        if peer in row.get("paired", {}):
            return row["paired"][peer]["median"]
        return row["fedray"]["round_s_median"] / row["peers"][peer]["round_s_median"]

    return {
        "fedray_over_pfl_at_100_per_round (target <= 0.95)": ratio(100, "pfl"),
        "fedray_over_flower_at_100_per_round (target <= 0.6)": ratio(100, "flower"),
        "fedray_over_pfl_at_10_per_round (target <= 0.95)": ratio(10, "pfl"),
        "cpu_per_task_fedray_over_pfl": {f"{s['total']}x{s['per_round']}": cpu_ratio(s, "pfl") for s in scenarios},
        "cpu_per_task_fedray_over_flower": {f"{s['total']}x{s['per_round']}": cpu_ratio(s, "flower") for s in scenarios},
        # what the targets ask for against what this run's floors allow (`ceilings`); E targets 0.9 and 0.8
        "ceilings": {
            f"{s['total']}x{s['per_round']}": {
                "zero_overhead_e_vs_bare (median)": c["zero_overhead_e_vs_bare"]["median"],
                "fedray_e_vs_bare_concurrent (median)": c["fedray_e_vs_bare_concurrent"]["median"],
                **{f"fedray_needs_e_vs_bare_concurrent_for_{name} (median)": need["median"]
                   for name, need in c["fedray_needs_e_vs_bare_concurrent"].items()},
            }
            for s in scenarios if "bare_concurrent_update_s" in s  # runs from before the concurrent floor have none
            for c in [s.get("ceilings") or ceilings(s)]
        },
    }


def plot(scenarios: list[dict], path: Path) -> None:
    """Median round of fedray (each run) and each peer per scenario, against the bare-update floors (alone, and
    one process per CPU at once)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(scenarios), figsize=(5.5 * len(scenarios), 4.2), squeeze=False)
    for ax, scenario in zip(axes[0], scenarios):
        names = [f"fedray run {i + 1}" for i in range(len(scenario["fedray_runs"]))] + list(scenario["peers"])
        values = [run["round_s_median"] for run in scenario["fedray_runs"]] + [
            p["round_s_median"] for p in scenario["peers"].values()]
        colours = ["tab:blue"] * len(scenario["fedray_runs"]) + ["tab:orange", "tab:green", "tab:red"][: len(scenario["peers"])]
        ax.bar(names, values, color=colours)
        ax.axhline(scenario["bare_floor_round_s"], color="black", linestyle="--", label="bare-update floor (alone)")
        if "bare_concurrent_floor_round_s" in scenario:
            ax.axhline(scenario["bare_concurrent_floor_round_s"], color="gray", linestyle=":",
                       label=f"bare-update floor ({scenario['cpus']} at once)")
        ax.set(title=f"{scenario['total']} hospitals, {scenario['per_round']} per round, {scenario['cpus']} CPUs",
               ylabel="median round (s, end to end)")
        ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
