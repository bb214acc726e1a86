"""Writes the scale workload's phantom hospitals and their stored cases under WORK (default /tmp/h14/work)."""
import sys, time
from pathlib import Path
from fedray.benchmarks.scale import workload
from fedray.data.case_store import Recipe, stored_cases
from fedray.data.datasets import ensure_stored
from fedray.data.federation import prepare_hospitals
total = int(sys.argv[1]) if len(sys.argv) > 1 else 100
work = Path(sys.argv[2] if len(sys.argv) > 2 else "/tmp/h14/work").resolve()
t = time.time()
config = workload(total, 10, 5, work, 2)
hospitals = prepare_hospitals(config).hospitals
for h in hospitals:
    for ref in stored_cases(h, config.data):
        ensure_stored(ref, Recipe.of(config.data))
print(total, "hospitals stored in", round(time.time() - t, 1), "s")
