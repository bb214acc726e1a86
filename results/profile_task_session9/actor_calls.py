"""One fedray HospitalActor in a private Ray (ray.init(address="local", num_cpus=2)): 60 training tasks sent
in run_batch calls of K hospitals, the actor process's CPU (psutil) against the CPU its tasks took inside
(thread CPU around HospitalWorker._train), the caller's CPU, and the raylet's/GCS's. Ad-hoc (session 9)."""
import os, sys, time, statistics
from pathlib import Path
import psutil, ray
K = int(sys.argv[1]) if len(sys.argv) > 1 else 5
N = 60
ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
from fedray.benchmarks.scale import workload
from fedray.data.case_store import stored_cases
from fedray.data.federation import prepare_hospitals
from fedray.messages import TrainTask, encode_state
from fedray.simulation.actors import HospitalActor
config = workload(100, 10, 5, Path("/tmp/h13/work"), 2)
hospitals = prepare_hospitals(config).hospitals

class Probe(HospitalActor):
    def __init__(self, *a):
        super().__init__(*a)
        import time as t
        worker = self._worker
        original = worker._train
        self.inside = []
        def timed(task):
            s = t.thread_time(); r = original(task); self.inside.append(t.thread_time() - s); return r
        worker._train = timed
    def inside_s(self):
        v = self.inside; self.inside = []; return v
    def weights(self):
        return encode_state({k: v.numpy().copy() for k, v in self._worker.model.state_dict().items()})

actor = ray.remote(Probe).options(num_cpus=1).remote(config, 1)
pid = ray.get(actor.pid.remote())
payload = ray.put(ray.get(actor.weights.remote()))
me = psutil.Process()
others = {p.pid: p for p in me.children(recursive=True) if p.pid != pid}
def cpu(p):
    t = p.cpu_times(); return t.user + t.system
def tasks(first, n):
    return [TrainTask(1 + i // 10, hospitals[i % 100], stored_cases(hospitals[i % 100], config.data), payload) for i in range(first, first + n)]
# warm-up: one round
for i in range(0, 10, K): ray.get(actor.run_batch.remote(tasks(i, K)))
ray.get(actor.flush.remote(1)); ray.get(actor.inside_s.remote())
a0, m0, o0 = cpu(psutil.Process(pid)), cpu(me), {k: cpu(p) for k, p in others.items()}
w0 = time.time()
for first in range(10, 10 + N, K):
    ray.get(actor.run_batch.remote(tasks(first, K)))
    if (first + K) % 10 == 0: ray.get(actor.flush.remote(1 + first // 10))
wall = time.time() - w0
a1, m1 = cpu(psutil.Process(pid)), cpu(me)
inside = ray.get(actor.inside_s.remote())
o1 = {k: cpu(p) for k, p in others.items() if psutil.pid_exists(k)}
names = {k: (p.name() if p.is_running() else "?") for k, p in others.items()}
print(f"K={K} hospitals per call, {N} tasks, wall {wall:.1f} s")
print(f"  actor process CPU {1e3*(a1-a0)/N:.2f} ms/task; inside _train (thread CPU) {1e3*sum(inside)/N:.2f} ms/task; rest of the actor {1e3*((a1-a0)-sum(inside))/N:.2f} ms/task")
print(f"  caller (this process) {1e3*(m1-m0)/N:.2f} ms/task")
by = {}
for k in o1:
    by[names[k]] = by.get(names[k], 0) + o1[k] - o0.get(k, 0)
print("  others:", {n: round(1e3 * v / N, 2) for n, v in sorted(by.items(), key=lambda kv: -kv[1]) if v > 0.001}, "ms/task")
ray.shutdown()
