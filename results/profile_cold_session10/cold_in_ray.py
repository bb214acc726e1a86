"""A real study through run_study (private Ray), with the actors' tasks recorded by hook/sitecustomize.py:
each task's CPU, cold (its actor's first task of that hospital) or warm.

    FEDRAY_PROF_OUT=DIR RAY_AUTH_MODE=token PYTHONPATH=results/profile_cold_session10/hook:/work/h14 \
        nice -n 10 python results/profile_cold_session10/cold_in_ray.py PER_ROUND ROUNDS [WORK]
"""
import glob, json, os, shutil, statistics, sys, time
from pathlib import Path
from fedray.benchmarks.scale import workload
from fedray.data.federation import prepare_hospitals
from fedray.simulation.launch import run_study
per_round, rounds = int(sys.argv[1]), int(sys.argv[2])
work = Path(sys.argv[3] if len(sys.argv) > 3 else "/tmp/h14/work").resolve()
out = os.environ["FEDRAY_PROF_OUT"]
for f in glob.glob(os.path.join(out, "actor-*.jsonl")):
    os.remove(f)
config = workload(100, per_round, rounds, work, 2, run_suffix=f"-cold{time.time_ns()}")
prepared = prepare_hospitals(config)
summary = run_study(config, prepared.hospitals, prepared.test_dir)
shutil.rmtree(config.run_dir, ignore_errors=True)
rows = [json.loads(line) for f in glob.glob(os.path.join(out, "actor-*.jsonl")) for line in open(f)]
tasks = [r for r in rows if r["kind"] == "task"]
calls = [r for r in rows if r["kind"] == "call"]
flushes = [r for r in rows if r["kind"] == "flush"]
print(f"100x{per_round}, {rounds} rounds: {len(tasks)} tasks, {len(calls)} calls, rounds wall {summary['rounds_wall_s']:.2f} s, actor nice {sorted({r['nice'] for r in flushes})}")
for label, sel in (("cold", [t for t in tasks if not t["warm"]]), ("warm", [t for t in tasks if t["warm"]]),
                   ("cold, rounds >= 2", [t for t in tasks if not t["warm"] and t["round"] >= 2]),
                   ("warm, rounds >= 2", [t for t in tasks if t["warm"] and t["round"] >= 2])):
    if sel:
        med = lambda k: statistics.median(t.get(k, 0.0) for t in sel)
        print(f"  {label:18s} n {len(sel):4d}  cpu {med('cpu')*1e3:6.2f}  thread {med('thread')*1e3:6.2f}  open {med('open')*1e3:5.2f}  "
              f"train_locally {med('train_locally')*1e3:6.2f}  global_weights {med('global_weights')*1e3:5.2f}  minflt {med('minflt'):.0f}  majflt {med('majflt'):.0f}")
ct = sum(t["cpu"] for t in tasks); cc = sum(c["cpu"] for c in calls)
print(f"  per task: in _train {ct/len(tasks)*1e3:.2f} ms; run_batch calls {cc/len(tasks)*1e3:.2f} ms (so outside _train inside the call {(cc-ct)/len(tasks)*1e3:.2f}); flushes {sum(f['cpu'] for f in flushes)/len(tasks)*1e3:.2f} ms")
r1 = [t for t in tasks if t["round"] == 1]
print(f"  round-1 tasks median cpu {statistics.median(t['cpu'] for t in r1)*1e3:.2f} (n {len(r1)}), first task per actor: " +
      ", ".join(f"{json.loads(open(f).readline())['cpu']*1e3:.1f}" for f in glob.glob(os.path.join(out, 'actor-*.jsonl'))))
