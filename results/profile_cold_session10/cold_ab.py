"""Same-process A/B: a hospital's first task in this process (cold) against its later tasks, CPU clock.

    RAY_AUTH_MODE=token PYTHONPATH=/work/h14 nice -n 10 python results/profile_cold_session10/cold_ab.py [WORK]

One HospitalWorker (1 torch thread, as an actor) on the scale workload's 100 hospitals. Iteration i
runs, in an order rotated every iteration: hospital i's first task (cold), hospital i-1's task with
the case store's per-process memos of its files removed (memo-cold), hospital i-2's third task
(warm, the memos kept), and a bare update. Every task of an iteration is in the same round: the
round's weights are decoded and its ledger made before the timers, and flushed after, so only the
per-task work is timed. Per task: process CPU, thread CPU, minor/major faults, and the stages."""
import functools, os, resource, statistics, sys, time
from collections import defaultdict
from pathlib import Path
import numpy as np
import torch
from fedray.benchmarks import bare
from fedray.benchmarks.scale import workload
from fedray.data import case_store
from fedray.data.case_store import stored_cases
from fedray.data.federation import prepare_hospitals
from fedray.messages import TrainTask, encode_state
from fedray.simulation import worker as W
from fedray.simulation.ledger import RoundLedger

work = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/h14/work").resolve()
config = workload(100, 10, 5, work, 2)
hospitals = prepare_hospitals(config).hospitals
data = {h.hospital_id: stored_cases(h, config.data) for h in hospitals}
clock = time.process_time
stages = {"open": ("HospitalWorker", "_open"), "train_locally": (None, "train_locally"),
          "ledger_add": ("RoundLedger", "add"), "weights": ("WeightCopier", "__call__")}
current = defaultdict(float)
def timed(name, f):
    @functools.wraps(f)
    def g(*a, **k):
        s = clock()
        try: return f(*a, **k)
        finally: current[name] += clock() - s
    return g
for name, (cls, attr) in stages.items():
    owner = getattr(W, cls) if cls else W
    setattr(owner, attr, timed(name, getattr(owner, attr)))
from fedray.data import patches
patches.PatchSampler.crop_at = timed("crops", patches.PatchSampler.crop_at)  # inside train_locally: the 4 patches copied out
w = W.HospitalWorker(config, threads=1)
payload = encode_state({k: v.numpy().copy() for k, v in w.model.state_dict().items()})
spec = bare.spec_of(config, len(config.data.organs))
model, loss = bare.make_network(spec), bare.make_loss(spec)
weights = {k: v.clone() for k, v in model.state_dict().items()}
rng = np.random.default_rng(0)
shape = (4, 1, 32, 32, 32)
batches = bare.hospital_batches(rng.standard_normal(shape, dtype=np.float32), rng.integers(0, 8, shape).astype(np.int64), 2)

def forget(hospital):  # the case store's memos of this hospital's files
    for ref in data[hospital.hospital_id]:
        for name in ("image", "label", "foreground"):
            case_store._LAYOUTS.pop(os.fspath(ref.folder / f"{name}.npy"), None)
        case_store._VERSIONS_CHECKED.pop(os.fspath(ref.folder / case_store.CASE_FILE), None)

def measure(fn):
    current.clear()
    r0 = resource.getrusage(resource.RUSAGE_SELF); t0 = time.thread_time(); c0 = clock()
    fn()
    c1 = clock(); t1 = time.thread_time(); r1 = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu": c1 - c0, "thread": t1 - t0, "minflt": r1.ru_minflt - r0.ru_minflt, "majflt": r1.ru_majflt - r0.ru_majflt, **current}

def bare_update():
    model.load_state_dict(weights); bare.update(model, loss, spec, batches, 2)

WARMUP = hospitals[95:]
for r, h in enumerate(WARMUP, 1):  # a few tasks first (not counted); these hospitals are not used below
    w.run(TrainTask(r, h, data[h.hospital_id], payload)); w.flush(r); bare_update()
res = defaultdict(list)
N = 95
for i in range(N + 2):
    r = 100 + i
    w._global_weights(r - 1, payload)
    w._sums[r] = RoundLedger(w.strategy, w._global[1])
    jobs = []
    if i < N:
        jobs.append(("cold", hospitals[i]))
    if 1 <= i <= N:
        jobs.append(("memo-cold", hospitals[i - 1]))
    if 2 <= i:
        jobs.append(("warm", hospitals[i - 2]))
    jobs.append(("bare", None))
    k = i % len(jobs); jobs = jobs[k:] + jobs[:k]
    for kind, h in jobs:
        if kind == "memo-cold":
            forget(h)
        fn = bare_update if h is None else (lambda h=h: w.run(TrainTask(r, h, data[h.hospital_id], payload)))
        res[kind].append(measure(fn))
    w.flush(r)
def med(kind, key):
    return statistics.median(x.get(key, 0.0) for x in res[kind])
keys = ["cpu", "thread", "open", "train_locally", "crops", "weights", "ledger_add", "minflt", "majflt"]
print(f"{N} hospitals, torch threads {torch.get_num_threads()}, pid {os.getpid()}, nice {os.nice(0)}")
print("| kind | n | " + " | ".join(keys) + " |")
for kind in ("cold", "memo-cold", "warm", "bare"):
    print(f"| {kind} | {len(res[kind])} | " + " | ".join(
        f"{med(kind, k):.0f}" if "flt" in k else f"{med(kind, k) * 1e3:.3f}" for k in keys) + " |")
# paired: the same hospital cold (iteration i) and warm (iteration i+2)
for a, b in (("cold", "warm"), ("memo-cold", "warm"), ("cold", "memo-cold")):
    off = {"cold": 0, "memo-cold": 1, "warm": 2}
    A = res[a]; B = res[b]
    pairs = [(A[j], B[j]) for j in range(min(len(A), len(B)))]  # index j = hospital j in each list
    for key in ("cpu", "open", "train_locally", "crops", "minflt"):
        d = [x.get(key, 0) - y.get(key, 0) for x, y in pairs]
        scale = 1 if "flt" in key else 1e3
        se = statistics.stdev(d) / len(d) ** 0.5
        print(f"paired {a} - {b} [{key}]: median {statistics.median(d) * scale:.3f}, mean {statistics.fmean(d) * scale:.3f} (se {se * scale:.3f}), n {len(d)}")
