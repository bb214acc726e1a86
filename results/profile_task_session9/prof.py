"""cProfile (process CPU clock) of 60 hospital tasks in-process (after 10 warm-up tasks), 5 per round then the flush.
    PYTHONPATH=<checkout> python prof.py [tottime|cumulative]"""
import cProfile, io, pstats, sys, time
sys.path.insert(0, "/tmp/h13")
import actor_ab
import torch
torch.set_num_threads(1)
from fedray.benchmarks.scale import workload
from fedray.data.case_store import stored_cases
from fedray.data.federation import prepare_hospitals
from fedray.messages import TrainTask, encode_state
from fedray.simulation import worker as worker_module
config = workload(100, 10, 5, actor_ab.WORK, 2)
hospitals = prepare_hospitals(config).hospitals
data = {h.hospital_id: stored_cases(h, config.data) for h in hospitals}
worker = worker_module.HospitalWorker(config, threads=1)
payload = encode_state({k: v.numpy().copy() for k, v in worker.model.state_dict().items()})
def task(i):
    r, h = 1 + i // 5, hospitals[i % len(hospitals)]
    worker.run(TrainTask(r, h, data[h.hospital_id], payload))
    if i % 5 == 4: worker.flush(r)
for i in range(10): task(i)
profiler = cProfile.Profile(time.process_time)
profiler.enable()
for i in range(10, 70): task(i)
profiler.disable()
out = io.StringIO()
stats = pstats.Stats(profiler, stream=out)
stats.sort_stats(sys.argv[1] if len(sys.argv) > 1 else "tottime").print_stats(45)
stats.print_callers("format_stack|_read_array_header")
stats.sort_stats("cumulative").print_stats("fedray|module.py:.*(load_state_dict|train|state_dict)", 45)
print(out.getvalue())
