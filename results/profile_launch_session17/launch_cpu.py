"""CPU of every process from a command's start to its first round, by kind of process (issue #13's launch target).

    python launch_cpu.py fedray CONFIG.yaml OUT.json    # `fedray run CONFIG.yaml`; first round = summary.json's first_round_at
    python launch_cpu.py pfl SPEC.json OUT.json PYTHON  # pfl-research under torchrun in PYTHON's environment;
                                                        # first round = its first round's end

Samples /proc every 20 ms (every process that starts after the command, and the command's own),
keeping each process's last CPU time (user + system) seen at or before the first round; prints
and writes the CPU seconds per kind of process and the wall time to the first round. Processes that
end between two samples lose at most 20 ms of CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def snapshot() -> dict[int, tuple[float, str, float]]:
    """pid -> (CPU seconds, command line, start time in clock ticks since boot)."""
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = open(f"/proc/{name}/stat").read()
            cmd = open(f"/proc/{name}/cmdline").read().replace("\0", " ").strip()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        comm = stat.split("(", 1)[1].rsplit(")", 1)[0]
        found[int(name)] = ((int(fields[11]) + int(fields[12])) / TICK, cmd or comm, int(fields[19]))
    return found


def kind(cmd: str) -> str:
    for key, label in (("HospitalActor", "hospital actor"), ("DriverActor", "driver actor"), ("gcs_server", "Ray GCS"),
                       ("raylet", "Ray raylet"), ("DashboardAgent", "Ray dashboard agent"),
                       ("RuntimeEnvAgent", "Ray runtime-env agent"), ("log_monitor", "Ray log monitor"),
                       ("monitor.py", "Ray autoscaler monitor"),
                       ("dashboard/dashboard.py", "Ray API server (dashboard.py, started without the UI too)"), ("ray::IDLE", "Ray idle worker"),
                       ("fedray.cli run", "fedray run (launcher)"), ("torch.distributed.run", "torchrun"),
                       ("pfl_research", "pfl process")):
        if key in cmd:
            return label
    return "other: " + cmd[:60]


def main(which: str, path: str, out: str, peer_python: str = sys.executable) -> None:
    before = set(snapshot())
    seen: dict[int, tuple[float, str, float]] = {}
    stamps: list[tuple[float, dict]] = []
    with tempfile.TemporaryDirectory() as tmp:
        if which == "fedray":
            command = [sys.executable, "-m", "fedray.cli", "run", path]
        else:
            command = [peer_python, "-m", "torch.distributed.run", "--standalone",
                       "--nproc_per_node=2", "-m", "fedray.benchmarks.peers.pfl_research", path, f"{tmp}/rounds.json"]
        started = time.time()
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 env={**os.environ, "OMP_NUM_THREADS": "1"})
        while child.poll() is None:
            now = time.time()
            current = {pid: v for pid, v in snapshot().items() if pid not in before or pid == child.pid}
            stamps.append((now, current))
            time.sleep(0.02)
        if child.returncode != 0:
            raise SystemExit(f"{command} failed ({child.returncode})")
        if which == "fedray":
            from fedray.config import load_config

            summary = json.loads((load_config(Path(path)).run_dir / "summary.json").read_text())
            first = summary["first_round_at"]
        else:
            first = json.loads(Path(f"{tmp}/rounds.json").read_text())["round_ends"][0]
    for now, current in stamps:
        if now > first:
            break
        seen.update(current)
    cpu: dict[str, float] = {}
    for seconds, cmd, _ in seen.values():
        cpu[kind(cmd)] = cpu.get(kind(cmd), 0.0) + seconds
    record = {"which": which, "command": command, "to_first_round_s": first - started,
              "first_round": "its dispatch (summary.json first_round_at)" if which == "fedray" else "its end",
              "cpu_s_by_kind": dict(sorted(cpu.items(), key=lambda kv: -kv[1])), "cpu_s_total": sum(cpu.values())}
    Path(out).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main(*sys.argv[1:5])
