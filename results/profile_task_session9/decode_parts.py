import time, statistics, numpy as np, torch
from pathlib import Path
from fedray.benchmarks.scale import workload
from fedray.models.factory import build_model
from fedray.messages import encode_state, decode_state, encoded_size
from fedray.strategies.base import state_to_torch
config = workload(100, 10, 5, Path("/tmp/h13/work"), 2)
model = build_model(config.model, len(config.data.organs))
state = {k: v.numpy().copy() for k, v in model.state_dict().items()}
payload = encode_state(state)
f64 = {k: v.astype(np.float64) for k, v in state.items()}
def t(f, n=200):
    s = time.process_time()
    for _ in range(n): f()
    return (time.process_time() - s) / n * 1e6
for _ in range(2):
    print("payload %d bytes | decode_state %.0f us | state_to_torch %.0f | encode_state %.0f | encode f64 partial sum %.0f | decode f64 %.0f | encoded_size %.0f" % (
        len(payload), t(lambda: decode_state(payload)), t(lambda: state_to_torch(state)), t(lambda: encode_state(state)),
        t(lambda: encode_state(f64)), t(lambda: decode_state(encode_state(f64))) , t(lambda: encoded_size(state))))
