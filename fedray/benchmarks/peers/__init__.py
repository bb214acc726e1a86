"""Peer frameworks on the scale workload, each in its own interpreter: what to run, and their round times.

A peer runs as a subprocess of the interpreter named by `--peer-python` (a peer may pin another Ray
than fedray's), on the same hospitals' arrays (`export_hospitals`) and the same update spec
(`fedray.benchmarks.bare`); it writes the wall time of each round's end, from which the round times
and the time from launch to its first round follow.
"""

from __future__ import annotations

import json
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


def run_peer(peer: Peer, python: str, spec: dict, work_dir: Path, timeout_s: float = 1800) -> dict:
    """Run one peer on `spec` (with its `data`) and return its figures; raises with its output's tail on failure."""
    work_dir.mkdir(parents=True, exist_ok=True)
    spec_path = work_dir / f"{peer.name}-spec.json"
    out = work_dir / f"{peer.name}-rounds.json"
    spec_path.write_text(json.dumps(spec, indent=2) + "\n")
    out.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(CHECKOUT), os.environ.get("PYTHONPATH")]))}
    launched = time.time()
    done = subprocess.run(peer.command(python, spec_path, out, spec["cpus"]), capture_output=True, text=True,
                          env=env, cwd=work_dir, timeout=timeout_s)
    finished = time.time()
    if done.returncode != 0 or not out.exists():
        raise RuntimeError(f"{peer.name} failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
    record = json.loads(out.read_text())
    return {
        "peer": peer.name,
        "version": record["version"],
        **{k: v for k, v in record.items() if k not in {"peer", "version", "round_s", "round_ends"}},
        **round_figures(record["round_s"], launched, record["round_ends"][0]),
        "process_s": finished - launched,
    }
