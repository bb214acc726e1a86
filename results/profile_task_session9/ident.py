"""Train 12 hospital tasks (two rounds of 6, flushed) and write every report, partial sum and loss: run under
two checkouts and compare bit by bit."""
import sys, pickle, numpy as np, torch
from pathlib import Path
torch.set_num_threads(1)
from fedray.benchmarks.scale import workload
from fedray.data.case_store import stored_cases
from fedray.data.federation import prepare_hospitals
from fedray.messages import TrainTask, encode_state, decode_state
from fedray.simulation import worker as worker_module
config = workload(100, 10, 5, Path("/tmp/h13/work"), 2)
hospitals = prepare_hospitals(config).hospitals
torch.manual_seed(0)
worker = worker_module.HospitalWorker(config, threads=1)
payload = encode_state({k: v.numpy().copy() for k, v in worker.model.state_dict().items()})
out = []
for r in (1, 2):
    for h in hospitals[(r - 1) * 6: r * 6]:
        rep = worker.run(TrainTask(r, h, stored_cases(h, config.data), payload))
        out.append(("report", rep))
    part = worker.flush(r)
    out.append(("part", part.weight, part.count, decode_state(part.aggregate), part.account.losses, sorted(part.account.compute_s)))
    payload = encode_state({k: (v / part.weight).astype(np.float32) for k, v in decode_state(part.aggregate).items()})
pickle.dump(out, open(sys.argv[1], "wb"))
print("wrote", sys.argv[1])
