"""torch.profiler over 20 fedray tasks and, separately, 20 bare updates in one process: ops whose count or self CPU differ."""
import sys, numpy as np, torch
sys.path.insert(0, "/tmp/h13")
from pathlib import Path
from torch.profiler import profile, ProfilerActivity
torch.set_num_threads(1)
from fedray.benchmarks import bare
from fedray.benchmarks.scale import workload
from fedray.data.case_store import stored_cases
from fedray.data.federation import prepare_hospitals
from fedray.messages import TrainTask, encode_state
from fedray.simulation import worker as worker_module
config = workload(100, 10, 5, Path("/tmp/h13/work"), 2)
hospitals = prepare_hospitals(config).hospitals
data = {h.hospital_id: stored_cases(h, config.data) for h in hospitals}
worker = worker_module.HospitalWorker(config, threads=1)
payload = encode_state({k: v.numpy().copy() for k, v in worker.model.state_dict().items()})
spec = bare.spec_of(config, len(config.data.organs))
model, loss = bare.make_network(spec), bare.make_loss(spec)
weights = {k: v.clone() for k, v in model.state_dict().items()}
rng = np.random.default_rng(0)
shape = (4, 1, 32, 32, 32)
batches = bare.hospital_batches(rng.standard_normal(shape, dtype=np.float32), rng.integers(0, 8, shape).astype(np.int64), 2)
def b():
    model.load_state_dict(weights); bare.update(model, loss, spec, batches, 2)
def t(i):
    h = hospitals[i % 100]; worker.run(TrainTask(1 + i // 5, h, data[h.hospital_id], payload))
    if i % 5 == 4: worker.flush(1 + i // 5)
for i in range(5): b(); t(i)
N = 20
def prof(f):
    with profile(activities=[ProfilerActivity.CPU]) as p:
        for i in range(N): f(i)
    return {e.key: (e.count / N, e.self_cpu_time_total / N) for e in p.key_averages()}
pb = prof(lambda i: b()); pt = prof(lambda i: t(5 + i))
keys = sorted(set(pb) | set(pt), key=lambda k: -max(pb.get(k, (0, 0))[1], pt.get(k, (0, 0))[1]))
print(f"{'op':40s} {'bare n':>7s} {'task n':>7s} {'bare us':>9s} {'task us':>9s}")
tb = sum(v[1] for v in pb.values()); tt = sum(v[1] for v in pt.values())
for k in keys[:60]:
    x, y = pb.get(k, (0, 0)), pt.get(k, (0, 0))
    print(f"{k[:40]:40s} {x[0]:7.1f} {y[0]:7.1f} {x[1]:9.0f} {y[1]:9.0f}")
print("only in task:", [(k, round(pt[k][0], 1), round(pt[k][1])) for k in pt if k not in pb])
print("only in bare:", [(k, round(pb[k][0], 1), round(pb[k][1])) for k in pb if k not in pt])
print(f"total self CPU per update: bare {tb:.0f} us, task {tt:.0f} us")
