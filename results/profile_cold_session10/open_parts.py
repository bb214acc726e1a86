"""The pieces of open_case on a case's first open in this process (cold) and its second (warm), CPU clock
(process_time, 1 thread), over the 400 stored cases of the scale workload's 100 hospitals.

    PYTHONPATH=/work/h14 nice -n 10 python results/profile_cold_session10/open_parts.py [WORK]
"""
import json, mmap, os, statistics, sys, time
from pathlib import Path
import numpy as np
from fedray.benchmarks.scale import workload
from fedray.data import case_store as cs
from fedray.data.federation import prepare_hospitals
work = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/h14/work").resolve()
config = workload(100, 10, 5, work, 2)
refs = [ref for h in prepare_hospitals(config).hospitals for ref in cs.stored_cases(h, config.data)]
clock = time.process_time
def parts(ref):
    t = {}; s = clock()
    cs.is_stored(ref); t["is_stored (stat)"] = clock() - s; s = clock()
    cs._check_version_once(ref.folder); t["case.json checked (stat, read, json)"] = clock() - s
    for name in ("image", "label", "foreground"):
        path = ref.folder / f"{name}.npy"
        s = clock(); f = open(path, "rb"); t["open()"] = t.get("open()", 0) + clock() - s
        s = clock(); layout = cs._layout(path, f); t["header (fstat + memo or parse)"] = t.get("header (fstat + memo or parse)", 0) + clock() - s
        s = clock(); buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ); f.close(); t["mmap + close"] = t.get("mmap + close", 0) + clock() - s
        shape, fortran, dtype, offset = layout
        s = clock(); a = np.frombuffer(buf, dtype=dtype, count=int(np.prod(shape, dtype=np.int64)), offset=offset).reshape(shape); t["frombuffer"] = t.get("frombuffer", 0) + clock() - s
    s = clock(); cs.CaseArrays(a, a, a, np.asarray(ref.labelled, dtype=bool)); t["CaseArrays"] = clock() - s
    return t
def whole(ref):
    s = clock(); cs.open_case(ref); return clock() - s
rows = {"cold": [parts(r) for r in refs[:200]], "warm": [parts(r) for r in refs[:200]]}
wholes = {"cold": [whole(r) for r in refs[200:]], "warm": [whole(r) for r in refs[200:]]}
print(f"{len(refs)} cases; per case, median us (CPU clock), pieces over cases 0-199, whole open_case over 200-399")
keys = list(rows["cold"][0])
print("| piece | cold | warm |")
for k in keys:
    print(f"| {k} | {statistics.median(r[k] for r in rows['cold'])*1e6:.1f} | {statistics.median(r[k] for r in rows['warm'])*1e6:.1f} |")
print(f"| sum of medians | {sum(statistics.median(r[k] for r in rows['cold']) for k in keys)*1e6:.1f} | {sum(statistics.median(r[k] for r in rows['warm']) for k in keys)*1e6:.1f} |")
print(f"| whole open_case (other cases) | {statistics.median(wholes['cold'])*1e6:.1f} | {statistics.median(wholes['warm'])*1e6:.1f} |")
