"""CPU seconds per process kind over a study's rounds (100 hospitals, N per round), and per task."""
import sys, time, shutil, collections
from pathlib import Path
import psutil
from fedray.benchmarks.scale import workload, PeakMemory
from fedray.data.federation import prepare_hospitals
from fedray.data.case_store import stored_cases, Recipe
from fedray.data.datasets import ensure_stored
from fedray.simulation.launch import run_study
per_round = int(sys.argv[1]); rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
names = {}
class Named(PeakMemory):
    def sample(self, *a):
        super().sample(*a)
        me = psutil.Process()
        for p in [me, *me.children(recursive=True)]:
            if True:
                try: names[p.pid] = " ".join(p.cmdline())[:60] or p.name()
                except Exception: pass
config = workload(100, per_round, rounds, Path("/tmp/h13/bench_work"), 2, run_suffix="-cpu")
prepared = prepare_hospitals(config)
shutil.rmtree(config.run_dir, ignore_errors=True)
SAMPLE_T = []
orig = Named.sample
def timed(self, *a):
    t = time.thread_time(); orig(self, *a); SAMPLE_T.append(time.thread_time() - t)
Named.sample = timed
with Named(0.25) as mem:
    summary = run_study(config, prepared.hospitals, prepared.test_dir)
start, end = summary["first_round_at"], summary["first_round_at"] + summary["rounds_wall_s"]
def at(m): return max((s for s in mem.cpu if s[0] <= m), key=lambda s: s[0])[1]
a, b = at(start), at(end)
tasks = per_round * rounds
groups = collections.defaultdict(float)
for pid, sec in b.items():
    n = names.get(pid, "?")
    n = n.replace("ray::", "")
    kind = ("HospitalActor" if "Hospital" in n else "DriverActor" if "Driver" in n else "launcher (this script)" if pid == psutil.Process().pid
            else "raylet" if "raylet/raylet" in n else "gcs_server" if "gcs_server" in n else "log_monitor" if "log_monitor" in n
            else "dashboard head" if "dashboard.py" in n else "autoscaler monitor" if "monitor.py" in n else n.split()[0].split("/")[-1][:30])
    groups[kind] += sec - a.get(pid, 0.0)
print(f"100x{per_round}, {rounds} rounds: wall {summary['rounds_wall_s']:.2f} s, tasks {tasks}")
for k, v in sorted(groups.items(), key=lambda kv: -kv[1]):
    if v > 0.005: print(f"  {k:32s} {v:7.2f} s  {1e3*v/tasks:7.2f} ms/task")
print(f"  {'total':32s} {sum(groups.values()):7.2f} s  {1e3*sum(groups.values())/tasks:7.2f} ms/task")
print(f'  sampler thread: {len(SAMPLE_T)} samples, {1e3*sum(SAMPLE_T)/len(SAMPLE_T):.1f} ms CPU each (sampler thread)')
