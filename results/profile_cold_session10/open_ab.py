"""Same-process A/B of a worker's case open, main's (`is_stored` then open_case with case.json parsed whole)
against this branch's (the version from case.json's first bytes, no separate is_stored), on each case's
first open in the process (cold) and its second (warm); CPU clock, per case, over the 400 stored cases
of the scale workload's 100 hospitals. Alternates case by case; `swap` gives main the other half.

    PYTHONPATH=/work/h14 nice -n 10 python results/profile_cold_session10/open_ab.py [swap]
"""
import os, statistics, sys, time
from pathlib import Path
import numpy as np
from fedray.benchmarks.scale import workload
from fedray.data import case_store as cs
from fedray.data.federation import prepare_hospitals
config = workload(100, 10, 5, Path("/tmp/h14/work"), 2)
refs = [ref for h in prepare_hospitals(config).hospitals for ref in cs.stored_cases(h, config.data)]
def main_open(ref):  # main's worker._open for one stored case (ensure_stored never called: all stored)
    assert cs.is_stored(ref)
    key = os.fspath(ref.folder / cs.CASE_FILE)
    stamp = cs._stamp(os.stat(key))
    if cs._VERSIONS_CHECKED.get(key) != stamp:
        cs.check_version(ref.folder)
        cs._remember(cs._VERSIONS_CHECKED, key, stamp)
    mapped = [cs.map_array(ref.folder / f"{name}.npy") for name in ("image", "label", "foreground")]
    return cs.CaseArrays(*mapped, np.asarray(ref.labelled, dtype=bool))
def branch_open(ref):
    return cs.open_case(ref, lambda r: r)
swap = len(sys.argv) > 1
clock = time.process_time
res = {(side, kind): [] for side in ("main", "branch") for kind in ("cold", "warm")}
for kind in ("cold", "warm"):
    for i, ref in enumerate(refs):
        side = "main" if (i % 2 == 0) != swap else "branch"
        f = main_open if side == "main" else branch_open
        s = clock(); a = f(ref); res[(side, kind)].append(clock() - s)
for kind in ("cold", "warm"):
    m, b = statistics.median(res[("main", kind)]), statistics.median(res[("branch", kind)])
    print(f"{kind}: main {m*1e6:.1f} us, branch {b*1e6:.1f} us per case (median of {len(res[('main', kind)])}), saved {(m-b)*1e6:.1f} us per case, {4*(m-b)*1e3:.3f} ms per task")
