"""Same-process A/B: main's open_case against this branch's, alternating, on 25 hospitals' 100 cases (CPU clock)."""
import sys, time, importlib.util, statistics, numpy as np
from pathlib import Path
sys.path.insert(0, "/tmp/h13")
import case_store_main as old
from fedray.data import case_store as new
from fedray.benchmarks.scale import workload
from fedray.data.federation import prepare_hospitals
config = workload(100, 10, 5, Path("/tmp/h13/work"), 2)
hospitals = prepare_hospitals(config).hospitals
refs = [r for h in hospitals[:25] for r in new.stored_cases(h, config.data)]
clock = time.process_time
def per_case(f):
    s = clock()
    for r in refs: f(r)
    return (clock() - s) / len(refs) * 1e6
a, b, c = [], [], []
def cleared(r):
    new._LAYOUTS.clear(); new._VERSIONS_CHECKED.clear(); new.open_case(r)
for i in range(30):
    a.append(per_case(old.open_case)); b.append(per_case(new.open_case)); c.append(per_case(cleared))
x, y = new.open_case(refs[0]), old.open_case(refs[0])
assert all(np.array_equal(getattr(x, f), getattr(y, f)) for f in ("image", "label", "foreground", "labelled"))
print("first open in the process (memo cleared before each case): %.1f us per case, %.3f ms per task" % (statistics.median(c), 4 * statistics.median(c) / 1e3))
print("open_case per case, median of 30 alternations: main %.1f us, branch %.1f us (%.2fx); per task (4 cases) %.3f -> %.3f ms" % (
    statistics.median(a), statistics.median(b), statistics.median(b) / statistics.median(a), 4 * statistics.median(a) / 1e3, 4 * statistics.median(b) / 1e3))
