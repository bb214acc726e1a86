"""Python's garbage collector during hospital tasks (in-process, as task_profile runs them): collections per
generation and their CPU (gc.callbacks, process CPU clock), per task."""
import gc, sys, time, statistics, torch
sys.path.insert(0, "/tmp/h13")
from pathlib import Path
torch.set_num_threads(1)
from fedray.benchmarks.scale import workload
from fedray.data.case_store import stored_cases
from fedray.data.federation import prepare_hospitals
from fedray.messages import TrainTask, encode_state
from fedray.simulation import worker as W
config = workload(100, 10, 5, Path("/tmp/h13/work"), 2)
hospitals = prepare_hospitals(config).hospitals
data = {h.hospital_id: stored_cases(h, config.data) for h in hospitals}
worker = W.HospitalWorker(config, threads=1)
payload = encode_state({k: v.numpy().copy() for k, v in worker.model.state_dict().items()})
def task(i):
    r, h = 1 + i // 5, hospitals[i % 100]
    worker.run(TrainTask(r, h, data[h.hospital_id], payload))
    if i % 5 == 4: worker.flush(r)
for i in range(10): task(i)
stats = {0: [], 1: [], 2: []}
start = {}
def cb(phase, info):
    if phase == "start": start["t"] = time.process_time()
    else: stats[info["generation"]].append(time.process_time() - start["t"])
gc.callbacks.append(cb)
N = 100
s = time.process_time()
for i in range(10, 10 + N): task(i)
total = time.process_time() - s
gc.callbacks.remove(cb)
print(f"objects tracked by gc: {len(gc.get_objects())}; {N} tasks, {total / N * 1e3:.2f} ms CPU per task")
for g, v in stats.items():
    print(f"  generation {g}: {len(v)} collections ({len(v)/N:.2f} per task), {sum(v)*1e3/N:.3f} ms per task, median {statistics.median(v)*1e3 if v else 0:.3f} ms each, max {max(v)*1e3 if v else 0:.2f}")
