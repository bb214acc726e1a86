import time, torch, numpy as np
torch.set_num_threads(1)
from pathlib import Path
from fedray.benchmarks.scale import workload
from fedray.models.factory import build_model
config = workload(100, 10, 5, Path("/tmp/h13/work"), 2)
model = build_model(config.model, len(config.data.organs))
sd = model.state_dict()
print(len(sd), "tensors", sum(v.numel() for v in sd.values()), "elements;", len(list(model.parameters())), "parameters;", len(list(model.buffers())), "buffers", len(list(model.modules())), "modules")
weights = {k: v.clone() for k, v in sd.items()}
targets = dict(model.state_dict(keep_vars=True))
pairs_dst = [targets[k] for k in weights]; pairs_src = list(weights.values())
clock = time.process_time
def t(f, n=300):
    s = clock()
    for _ in range(n): f()
    return (clock() - s) / n * 1e6
def copy_loop():
    with torch.no_grad():
        for d, s in zip(pairs_dst, pairs_src): d.copy_(s)
def foreach():
    with torch.no_grad():
        torch._foreach_copy_(pairs_dst, pairs_src)
def payload():
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
cached = model.state_dict()
def payload_cached():
    return {k: v.numpy() for k, v in cached.items()}
for _ in range(2):
    print("load_state_dict %.0f us | copy_ loop %.0f | _foreach_copy_ %.0f | payload(state_dict->numpy) %.0f | cached %.0f | model.train() %.0f | manual_seed %.0f | default_generator.manual_seed %.1f" % (
        t(lambda: model.load_state_dict(weights)), t(copy_loop), t(foreach), t(payload), t(payload_cached), t(lambda: model.train()),
        t(lambda: torch.manual_seed(1)), t(lambda: torch.default_generator.manual_seed(1))))
# bitwise equality
model.load_state_dict(weights); a = {k: v.clone() for k, v in model.state_dict().items()}
for v in model.state_dict().values(): v.add_(1.0) if v.is_floating_point() else None
foreach(); b = model.state_dict()
print("foreach equal:", all(torch.equal(a[k], b[k]) for k in a))
