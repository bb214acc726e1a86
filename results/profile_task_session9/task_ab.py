"""Same-process A/B of a whole hospital task (CPU clock): the branch's HospitalWorker against one switched back
to main's per-task code (load_state_dict, torch.manual_seed, main's open_case, np.load's decode, hooks.payload), alternating with the bare update.
Tasks cycle over the 100 hospitals as task_profile's do (5 per round, then the flush)."""
import sys, time, statistics, numpy as np, torch
sys.path.insert(0, "/tmp/h13")
from pathlib import Path
torch.set_num_threads(1)
import case_store_main
import fedray.data.case_store as _cs
case_store_main.CaseArrays = _cs.CaseArrays
from fedray.benchmarks import bare
from fedray.benchmarks.scale import workload
from fedray.data.case_store import stored_cases
from fedray.data.federation import prepare_hospitals
from fedray.messages import TrainTask, encode_state
from fedray.simulation import worker as W
N = int(sys.argv[1]) if len(sys.argv) > 1 else 60
config = workload(100, 10, 5, Path("/tmp/h13/work"), 2)
hospitals = prepare_hospitals(config).hospitals
data = {h.hospital_id: stored_cases(h, config.data) for h in hospitals}
torch.manual_seed(0)
new = W.HospitalWorker(config, threads=1)
torch.manual_seed(0)
old = W.HospitalWorker(config, threads=1)
class MainCopier:  # main's load_state_dict, and hooks.payload (no state_arrays)
    def __init__(self, model): self.model = model
    def __call__(self, weights): self.model.load_state_dict(weights)
    def state_arrays(self): return None
old._weights_into = MainCopier(old.model)
import io
def main_decode(payload):
    with np.load(io.BytesIO(payload), allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}
payload = encode_state({k: v.numpy().copy() for k, v in new.model.state_dict().items()})
branch_seed, branch_open, branch_decode = W.seed_torch, W.open_case, W.decode_state
spec = bare.spec_of(config, len(config.data.organs))
model, loss = bare.make_network(spec), bare.make_loss(spec)
weights = {k: v.clone() for k, v in model.state_dict().items()}
rng = np.random.default_rng(0)
shape = (4, 1, 32, 32, 32)
batches = bare.hospital_batches(rng.standard_normal(shape, dtype=np.float32), rng.integers(0, 8, shape).astype(np.int64), 2)
clock = time.process_time
def bare_update():
    s = clock(); model.load_state_dict(weights); bare.update(model, loss, spec, batches, 2); return clock() - s
def task(worker, i, main_like):
    W.seed_torch = (lambda seed, device: torch.manual_seed(seed)) if main_like else branch_seed
    W.open_case = case_store_main.open_case if main_like else branch_open
    W.decode_state = main_decode if main_like else branch_decode
    r, h = 1 + i // 5, hospitals[i % 100]
    s = clock(); worker.run(TrainTask(r, h, data[h.hospital_id], payload)); t = clock() - s
    if i % 5 == 4: worker.flush(r)
    return t
for i in range(5): bare_update(); task(old, i, True); task(new, i, False)
res = {"bare": [], "main's per-task code": [], "branch": []}
for i in range(5, 5 + N):
    order = [("bare", None), ("main's per-task code", old), ("branch", new)]
    if i % 2: order.reverse()
    for name, w in order:
        res[name].append(bare_update() if w is None else task(w, i, w is old))
b = statistics.median(res["bare"])
for k, v in res.items():
    m = statistics.median(v); print(f"{k}: median {m*1e3:.2f} ms CPU ({m/b:.3f}x bare), mean {statistics.fmean(v)*1e3:.2f}")
d = [o - n for o, n in zip(res["main's per-task code"], res["branch"])]
import math
sd = statistics.stdev(d)
trim = sorted(d)[N // 10: N - N // 10]
print(f"paired main - branch: median {statistics.median(d)*1e3:.2f} ms, mean {statistics.fmean(d)*1e3:.2f} ms (standard error {sd / math.sqrt(N) * 1e3:.2f}), 10%-trimmed mean {statistics.fmean(trim)*1e3:.2f} ms over {N} tasks")
