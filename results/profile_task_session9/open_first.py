"""A fresh process opens each of the 100 hospitals' 4 cases once, as worker._open does (is_stored + open_case): CPU per hospital."""
import sys, time, statistics
from pathlib import Path
from fedray.benchmarks.scale import workload
from fedray.data.case_store import stored_cases, open_case, is_stored
from fedray.data.federation import prepare_hospitals
config = workload(100, 10, 5, Path("/tmp/h13/work"), 2)
hospitals = prepare_hospitals(config).hospitals
refs = [stored_cases(h, config.data) for h in hospitals]
times, keep = [], []
for rs in refs:
    s = time.process_time()
    cases = [open_case(r) for r in rs if is_stored(r)]
    times.append(time.process_time() - s)
    keep = cases  # the previous task's maps are dropped here, as a worker's are
print(sys.argv[1], "first open of a hospital's 4 cases: median %.3f ms, mean %.3f ms CPU" % (statistics.median(times) * 1e3, statistics.fmean(times) * 1e3))
