"""Same-process A/B (CPU clock, alternating blocks of 50): np.load's decode against decode_state, on the scale
workload's global weights (float32) and a partial sum (float64); the arrays compared for equality."""
import io, time, statistics, numpy as np
from pathlib import Path
from fedray.benchmarks.scale import workload
from fedray.models.factory import build_model
from fedray.messages import encode_state, decode_state
config = workload(100, 10, 5, Path("/tmp/h13/work"), 2)
model = build_model(config.model, len(config.data.organs))
weights = {k: v.numpy().copy() for k, v in model.state_dict().items()}
partial = {k: v.astype(np.float64) * 3.0 for k, v in weights.items()}
def old(payload):
    with np.load(io.BytesIO(payload), allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}
for name, state in (("global weights (float32)", weights), ("partial sum (float64)", partial)):
    payload = encode_state(state)
    a, b = old(payload), decode_state(payload)
    assert list(a) == list(b) and all(np.array_equal(a[k], b[k]) and a[k].dtype == b[k].dtype and a[k].flags.writeable == b[k].flags.writeable for k in a)
    A, B = [], []
    for _ in range(10):
        s = time.process_time(); [old(payload) for _ in range(50)]; A.append((time.process_time() - s) / 50)
        s = time.process_time(); [decode_state(payload) for _ in range(50)]; B.append((time.process_time() - s) / 50)
    print(f"{name}, {len(payload)} bytes: np.load {statistics.median(A)*1e3:.2f} ms, decode_state {statistics.median(B)*1e3:.2f} ms (medians of 10 blocks); identical arrays")
