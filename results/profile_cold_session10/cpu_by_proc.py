"""CPU seconds per process kind over a study's rounds (scale workload, 100 hospitals, N per round), per task,
and each process's niceness (read from psutil, i.e. /proc/<pid>/stat) during the rounds.

    RAY_AUTH_MODE=token PYTHONPATH=/work/h14 nice -n 10 python results/profile_cold_session10/cpu_by_proc.py PER_ROUND ROUNDS [WORK]
"""
import collections, shutil, sys, time
from pathlib import Path
import psutil
from fedray.benchmarks.scale import workload, PeakMemory
from fedray.data.federation import prepare_hospitals
from fedray.simulation.launch import run_study
per_round = int(sys.argv[1]); rounds = int(sys.argv[2])
work = Path(sys.argv[3] if len(sys.argv) > 3 else "/tmp/h14/work").resolve()
names, nices = {}, {}
class Named(PeakMemory):
    def sample(self, *a):
        super().sample(*a)
        me = psutil.Process()
        for p in [me, *me.children(recursive=True)]:
            try:
                names[p.pid] = " ".join(p.cmdline())[:80] or p.name()
                nices[p.pid] = p.nice()
            except Exception:
                pass
config = workload(100, per_round, rounds, work, 2, run_suffix=f"-cpu{time.time_ns()}")
prepared = prepare_hospitals(config)
with Named(0.25) as mem:
    summary = run_study(config, prepared.hospitals, prepared.test_dir)
shutil.rmtree(config.run_dir, ignore_errors=True)
start, end = summary["first_round_at"], summary["first_round_at"] + summary["rounds_wall_s"]
def at(m): return max((s for s in mem.cpu if s[0] <= m), key=lambda s: s[0])[1]
a, b = at(start), at(end)
tasks = per_round * rounds
groups = collections.defaultdict(float); kinds_nice = {}
for pid, sec in b.items():
    n = names.get(pid, "?").replace("ray::", "")
    kind = ("HospitalActor" if "Hospital" in n else "DriverActor" if "Driver" in n else "launcher (this script)" if pid == psutil.Process().pid
            else "raylet" if "raylet/raylet" in n else "gcs_server" if "gcs_server" in n else "log_monitor" if "log_monitor" in n
            else "dashboard head" if "dashboard.py" in n else "dashboard agent" if "agent" in n else "autoscaler monitor" if "monitor.py" in n else n.split()[0].split("/")[-1][:30])
    groups[kind] += sec - a.get(pid, 0.0)
    kinds_nice.setdefault(kind, set()).add(nices.get(pid))
print(f"100x{per_round}, {rounds} rounds: rounds wall {summary['rounds_wall_s']:.2f} s, tasks {tasks}, launcher nice {psutil.Process().nice()}")
for k, v in sorted(groups.items(), key=lambda kv: -kv[1]):
    if v > 0.005: print(f"  {k:28s} {v:7.2f} s  {1e3*v/tasks:7.2f} ms/task  {1e3*v/rounds:8.1f} ms/round  nice {sorted(x for x in kinds_nice[k] if x is not None)}")
print(f"  {'total':28s} {sum(groups.values()):7.2f} s  {1e3*sum(groups.values())/tasks:7.2f} ms/task")
