"""Ray's task timeline of a 100 x PER_ROUND study of the scale workload (ROUNDS rounds): per round, how
long each hospital actor sat idle between its calls, from the round's first call to its last reply.

    RAY_AUTH_MODE=token python results/profile_timeline_session11/timeline.py 10 12 OUT.json
"""
import json
import sys
import time
from pathlib import Path

import ray

from fedray.benchmarks.scale import workload
from fedray.data.federation import prepare_hospitals
from fedray.simulation import launch

per_round, rounds, out = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
config = workload(100, per_round, rounds, Path("/tmp/tl11/work"), 2, run_suffix=f"-tl{time.time_ns()}")
prepared = prepare_hospitals(config)
summary = launch.run_study(config, prepared.hospitals, prepared.test_dir)
events = [e for e in ray.timeline() if e.get("ph") == "X"]
ray.shutdown()
# Chrome-trace events: name "HospitalActor.run_batch" etc., ts/dur in microseconds, pid/tid per worker
calls = sorted(({"name": e["name"], "worker": f"{e['pid']}:{e['tid']}", "start_ms": e["ts"] / 1e3,
                 "end_ms": (e["ts"] + e["dur"]) / 1e3} for e in events), key=lambda c: c["start_ms"])
kinds = sorted({c["name"] for c in calls})
print("kinds", kinds)
train = [c for c in calls if c["name"].endswith("run_batch") or c["name"].endswith("flush")]
workers = sorted({c["worker"] for c in train})
# split into rounds by flush calls: a round on a worker ends with its flush
per_worker = {w: [c for c in train if c["worker"] == w] for w in workers}
rows = []
for w, cs in per_worker.items():
    start = None
    busy = 0.0
    last_end = None
    for c in cs:
        if start is None:
            start = c["start_ms"]
            first_gap = None if last_end is None else c["start_ms"] - last_end
            busy = 0.0
            gaps = []
        elif c["start_ms"] - prev_end > 0:
            gaps.append(c["start_ms"] - prev_end)
        busy += c["end_ms"] - c["start_ms"]
        prev_end = c["end_ms"]
        if c["name"].endswith("flush"):
            rows.append({"worker": w, "span_ms": c["end_ms"] - start, "busy_ms": busy, "gaps_in_round_ms": sum(gaps),
                         "idle_before_round_ms": first_gap, "calls": None})
            last_end, start = c["end_ms"], None
out.write_text(json.dumps({"summary_rounds_wall_s": summary.get("rounds_wall_s"), "rows": rows, "calls": calls}, indent=1))
import statistics as st
for key in ("span_ms", "busy_ms", "gaps_in_round_ms", "idle_before_round_ms"):
    vals = [r[key] for r in rows[2:] if r[key] is not None]
    print(key, "median", round(st.median(vals), 1) if vals else None)
