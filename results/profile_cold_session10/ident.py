"""Bit-identity check: 20 hospital tasks of the scale workload in-process (two rounds of 10 on one
HospitalWorker, the second from the first's new global weights), every report, partial sum and loss
hashed; run with main's tree and with the branch on PYTHONPATH and compare the printed digests.

    PYTHONPATH=/tmp/h14/base nice -n 10 python results/profile_cold_session10/ident.py
    PYTHONPATH=/work/h14 nice -n 10 python results/profile_cold_session10/ident.py
"""
import hashlib, pickle
from pathlib import Path
import numpy as np
import torch
from fedray.benchmarks.scale import workload
from fedray.data.case_store import stored_cases
from fedray.data.federation import prepare_hospitals
from fedray.messages import TrainTask, encode_state
from fedray.simulation.ledger import RoundLedger
from fedray.simulation.worker import HospitalWorker
import fedray
config = workload(100, 10, 5, Path("/tmp/h14/work"), 2)
hospitals = prepare_hospitals(config).hospitals
torch.manual_seed(0)
worker = HospitalWorker(config, threads=1)
state = {k: v.numpy().copy() for k, v in worker.model.state_dict().items()}
digest = hashlib.sha256()
for r in (1, 2):
    payload = encode_state(state)
    for h in hospitals[(r - 1) * 37 % 100:][:10]:
        report = worker.run(TrainTask(r, h, stored_cases(h, config.data), payload))
        digest.update(pickle.dumps((report.hospital_id, report.failed, report.client_state)))
    part = worker.flush(r)
    ledger = RoundLedger(worker.strategy, state)
    ledger.merge(part)
    state = ledger.new_global_state()
    for k in sorted(state):
        digest.update(k.encode()); digest.update(np.ascontiguousarray(state[k]).tobytes())
    digest.update(repr(sorted(ledger.account.accepted)).encode())
print(fedray.__file__, "final weights + reports:", digest.hexdigest())
