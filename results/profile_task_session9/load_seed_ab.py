"""Same-process A/B (CPU clock, alternating blocks of 100 calls, 20 blocks): load_state_dict vs WeightCopier,
torch.manual_seed vs seed_torch, on the scale workload's U-Net."""
import time, statistics, torch
from pathlib import Path
torch.set_num_threads(1)
from fedray.benchmarks.scale import workload
from fedray.models.factory import build_model
from fedray.simulation.worker import WeightCopier, seed_torch
config = workload(100, 10, 5, Path("/tmp/h13/work"), 2)
model = build_model(config.model, len(config.data.organs))
weights = {k: v.clone() for k, v in build_model(config.model, len(config.data.organs)).state_dict().items()}
copier = WeightCopier(model)
cpu = torch.device("cpu")
def block(f, n=100):
    s = time.process_time()
    for i in range(n): f(i)
    return (time.process_time() - s) / n * 1e6
res = {k: [] for k in ("load_state_dict", "WeightCopier", "torch.manual_seed", "seed_torch")}
for _ in range(20):
    res["load_state_dict"].append(block(lambda i: model.load_state_dict(weights)))
    res["WeightCopier"].append(block(lambda i: copier(weights)))
    res["torch.manual_seed"].append(block(lambda i: torch.manual_seed(i)))
    res["seed_torch"].append(block(lambda i: seed_torch(i, cpu)))
for k, v in res.items(): print(f"{k}: median {statistics.median(v):.1f} us per call")
