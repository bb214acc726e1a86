import sys, time, json, os, mmap, numpy as np
from pathlib import Path
from fedray.benchmarks.scale import workload
from fedray.data.case_store import stored_cases, open_case, is_stored, check_version, map_array, CASE_FILE
from fedray.data.federation import prepare_hospitals
config = workload(100, 10, 5, Path("/tmp/h13/work"), 2)
hospitals = prepare_hospitals(config).hospitals
refs = [r for h in hospitals[:25] for r in stored_cases(h, config.data)]
clock = time.process_time
def t(f, reps=10):
    s = clock()
    for _ in range(reps):
        for r in refs: f(r)
    return (clock() - s) / reps / len(refs) * 1e6
def mm(p):
    with open(p, "rb") as f:
        b = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    return np.frombuffer(b, dtype=np.float32, count=1, offset=128)
for _ in range(2):
    print("open_case %.1f us | is_stored %.1f | check_version %.1f | 3 map_array %.1f | 3 open+mmap+frombuffer only %.1f | stat case.json %.1f" % (
        t(open_case), t(is_stored), t(lambda r: check_version(r.folder)),
        t(lambda r: [map_array(r.folder / f"{n}.npy") for n in ("image", "label", "foreground")]),
        t(lambda r: [mm(r.folder / f"{n}.npy") for n in ("image", "label", "foreground")]),
        t(lambda r: os.stat(r.folder / CASE_FILE))))
print(refs[0].folder, [ (n, os.path.getsize(refs[0].folder / f"{n}.npy")) for n in ("image","label","foreground")])
