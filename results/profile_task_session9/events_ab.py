"""Two fedray HospitalActors in one private Ray (ray.init(address="local", num_cpus=2)), one created with
enable_task_events=False: batches of K training tasks sent to each in turn; per actor, its process CPU beyond
the CPU its tasks took inside (thread CPU around HospitalWorker._train), and the caller's CPU around its calls.
Ad-hoc (session 9)."""
import sys, time, statistics
from pathlib import Path
import psutil, ray
K = int(sys.argv[1]) if len(sys.argv) > 1 else 1
N = int(sys.argv[2]) if len(sys.argv) > 2 else 60
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
        original = self._worker._train
        self.inside = 0.0
        def timed(task):
            nonlocal original
            s = t.thread_time(); r = original(task); self.inside += t.thread_time() - s; return r
        self._worker._train = timed
    def counters(self):
        import time as t
        return self.inside, t.process_time()
    def weights(self):
        return encode_state({k: v.numpy().copy() for k, v in self._worker.model.state_dict().items()})
actors = {"task events on (Ray's default)": ray.remote(Probe).options(num_cpus=1).remote(config, 1),
          "enable_task_events=False": ray.remote(Probe).options(num_cpus=1, enable_task_events=False).remote(config, 1)}
payload = ray.put(ray.get(next(iter(actors.values())).weights.remote()))
def tasks(first, n):
    return [TrainTask(1 + i // 10, hospitals[i % 100], stored_cases(hospitals[i % 100], config.data), payload) for i in range(first, first + n)]
for a in actors.values():
    for i in range(0, 10, K): ray.get(a.run_batch.remote(tasks(i, K)))
    ray.get(a.flush.remote(1))
start = {n: ray.get(a.counters.remote()) for n, a in actors.items()}
caller = {n: 0.0 for n in actors}
for first in range(10, 10 + N, K):
    for n, a in actors.items():
        s = time.process_time()
        ray.get(a.run_batch.remote(tasks(first, K)))
        if (first + K) % 10 == 0: ray.get(a.flush.remote(1 + first // 10))
        caller[n] += time.process_time() - s
print(f"K={K} hospitals per call, {N} tasks per actor")
for n, a in actors.items():
    inside, proc = ray.get(a.counters.remote())
    di, dp = inside - start[n][0], proc - start[n][1]
    print(f"  {n}: actor process CPU {1e3*dp/N:.2f} ms/task, inside _train {1e3*di/N:.2f}, rest of the actor {1e3*(dp-di)/N:.2f} ms/task; caller {1e3*caller[n]/N:.2f} ms/task")
ray.shutdown()
