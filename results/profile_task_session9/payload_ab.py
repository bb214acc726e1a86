"""Same-process A/B (CPU clock, alternating blocks of 100): ClientHooks.payload(model) against WeightCopier.state_arrays()."""
import time, statistics, torch
from pathlib import Path
torch.set_num_threads(1)
from fedray.benchmarks.scale import workload
from fedray.models.factory import build_model
from fedray.simulation.worker import WeightCopier
from fedray.training.hooks import ClientHooks
config = workload(100, 10, 5, Path("/tmp/h13/work"), 2)
model = build_model(config.model, len(config.data.organs))
copier, hooks = WeightCopier(model), ClientHooks(None, None)
A, B = [], []
for _ in range(20):
    s = time.process_time(); [hooks.payload(model) for _ in range(100)]; A.append((time.process_time() - s) / 100)
    s = time.process_time(); [copier.state_arrays() for _ in range(100)]; B.append((time.process_time() - s) / 100)
print(f"hooks.payload {statistics.median(A)*1e6:.0f} us, WeightCopier.state_arrays {statistics.median(B)*1e6:.0f} us per call (medians of 20 blocks)")
