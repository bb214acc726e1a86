"""The paper-shaped study on one GPU: 7 hospital actors packed on the card, a fixed number of rounds.

Run on a machine with one CUDA GPU, from the repository root (about 10 minutes at the defaults):
    python cluster/paper_study_gpu.py --rounds 5 --out results/paper_study_gpu.json
It runs `fedray run configs/paper_mots7.yaml` (17.29 M parameters, 64x128x128 patches, 80 local
steps, FedKD) with 7 actors at 1/7 GPU each, evaluation only after the last round, and writes
the median time per round (evaluation excluded), the projected time of the paper's 1000 rounds,
per-actor GPU memory (nvidia-smi, one process per actor) and GPU utilisation sampled every
second. `--tiny` is the CPU smoke mode the tests run: a small width, 2 rounds, no GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
PAPER_ROUNDS = 1000
ACTORS = 7


def study_overrides(rounds: int, tiny: bool, work: Path, teacher_steps: int = 20) -> list[str]:
    """`fedray run` overrides: fixed rounds, one evaluation at the end, the actors packed, short
    teacher pre-training (it is timed apart from the rounds; the config's 2000 steps would not fit)."""
    common = [
        f"rounds={rounds}",
        f"method.params.teacher_steps={teacher_steps}",
        f"eval.every={rounds}",
        f"resources.actors={ACTORS}",
        "name=paper_study_gpu",
        f"tracking.results_dir={work / 'results'}",
        f"tracking.uri=sqlite:///{work / 'mlflow.db'}",
        f"data.cache_dir={work / 'data'}",
        "tracking.run_name=paper_study_gpu",
    ]
    if tiny:
        return common + [
            "model.channels=[8,16]", "model.blocks=[1,1]", "train.local_steps=1",
            "method.params.teacher_steps=1", "data.patch_size=[16,16,16]", "eval.roi_size=[16,16,16]",
            "data.phantom.shape=[32,32,16]", "data.phantom.test_cases=1",
            *[f"federation.hospitals[{i}].cases=1" for i in range(ACTORS)],
            "resources.cpus_per_actor=0.25", "resources.gpus_per_actor=0",
        ]
    return common + ["resources.cpus_per_actor=2", f"resources.gpus_per_actor={1 / ACTORS:.4f}"]


class GpuSampler:
    """nvidia-smi every `period_s`: card utilisation and memory, and memory per process."""

    def __init__(self, period_s: float = 1.0) -> None:
        self.period_s = period_s
        self.samples: list[dict] = []
        self.per_process_mib: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def available() -> bool:
        try:
            return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=10).returncode == 0
        except (FileNotFoundError, subprocess.TimeoutExpired):
            return False

    def _query(self, *args: str) -> list[list[str]]:
        out = subprocess.run(["nvidia-smi", *args, "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout
        return [[v.strip() for v in line.split(",")] for line in out.strip().splitlines() if line.strip()]

    def _run(self) -> None:
        while not self._stop.is_set():
            for util, used in self._query("--query-gpu=utilization.gpu,memory.used"):
                self.samples.append({"t": time.time(), "util_pct": float(util), "memory_used_mib": float(used)})
            for pid, used in self._query("--query-compute-apps=pid,used_memory"):
                self.per_process_mib[pid] = max(self.per_process_mib.get(pid, 0.0), float(used))
            self._stop.wait(self.period_s)

    def __enter__(self) -> GpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run(rounds: int, tiny: bool, work: Path, teacher_steps: int = 20) -> dict:
    """Run the study and return the record (see the module docstring)."""
    command = [sys.executable, "-m", "fedray.cli", "run", str(ROOT / "configs" / "paper_mots7.yaml"),
               *study_overrides(rounds, tiny, work, teacher_steps)]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    gpu = GpuSampler.available() and not tiny
    start = time.perf_counter()
    if gpu:
        with GpuSampler() as sampler:
            done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    else:
        sampler = None
        done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    wall_s = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"fedray run failed ({done.returncode}):\n{done.stderr[-4000:]}")
    run_dir = work / "results" / "paper_study_gpu"
    rows = pd.read_csv(run_dir / "rounds.csv")
    summary = json.loads((run_dir / "summary.json").read_text())
    train_s = rows["time/train_s"].tolist()
    # Round 1 also pays for CUDA start-up and the first kernels; the median of the rest is the rate.
    steady = train_s[1:] or train_s
    round_s = statistics.median(steady)
    record = {
        "benchmark": "paper_study_gpu",
        "mode": "tiny (CPU smoke)" if tiny else "paper width",
        "config": "configs/paper_mots7.yaml",
        "overrides": study_overrides(rounds, tiny, Path("WORK"), teacher_steps),
        "teacher_steps": 1 if tiny else teacher_steps,
        "rounds": rounds,
        "actors": ACTORS,
        "params_total": summary["params_total"],
        "train_round_s": train_s,
        "median_round_s_after_first": round_s,
        "eval_s_last_round": float(rows["time/eval_s"].iloc[-1]),
        "projected_1000_rounds_h": round_s * PAPER_ROUNDS / 3600,
        "projection_note": "median training round (rounds 2..N) x 1000; evaluation not included",
        "wall_s": wall_s,
        "gpu": None,
    }
    if sampler is not None:
        utils = [s["util_pct"] for s in sampler.samples]
        record["gpu"] = {
            "samples": len(sampler.samples),
            "util_pct_mean": statistics.mean(utils) if utils else None,
            "util_pct_median": statistics.median(utils) if utils else None,
            "memory_used_mib_max": max((s["memory_used_mib"] for s in sampler.samples), default=None),
            "memory_per_process_mib_max": sampler.per_process_mib,
        }
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tiny", action="store_true", help="CPU smoke mode: small width, no GPU")
    parser.add_argument("--out", type=Path, default=Path("results/paper_study_gpu.json"))
    parser.add_argument("--teacher-steps", type=int, default=20, help="FedKD teacher pre-training steps")
    parser.add_argument("--work-dir", type=Path, default=None, help="default: a temporary folder")
    args = parser.parse_args(argv)
    rounds = 2 if args.tiny and args.rounds == 5 else args.rounds
    with tempfile.TemporaryDirectory() as tmp:
        record = run(rounds, args.tiny, args.work_dir or Path(tmp), args.teacher_steps)
    print(json.dumps({k: record[k] for k in ("mode", "median_round_s_after_first", "projected_1000_rounds_h")}))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
