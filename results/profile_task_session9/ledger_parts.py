import time, numpy as np
from fedray.simulation.ledger import update_problem
from fedray.strategies.aggregate import WeightedSum
rng = np.random.default_rng(0)
shapes = [(8,1,3,3,3),(8,),(16,8,3,3,3),(16,),(32,16,3,3,3),(32,),(64,32,3,3,3),(64,),(64,32,3,3,3),(32,),(32,32,3,3,3),(32,),(64,16,3,3,3),(16,),(16,16,3,3,3),(16,),(32,8,3,3,3),(8,),(8,8,3,3,3),(8,)]
upd = {f"k{i}": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(shapes)}
print(sum(v.size for v in upd.values()))
clock = time.process_time
def t(f, n=500):
    s = clock()
    for _ in range(n): f()
    return (clock() - s) / n * 1e6
ws = WeightedSum(); ws.add(upd, 4.0)
tot = {k: v.astype(np.float64) * 4.0 for k, v in upd.items()}
def add_new():
    for k, v in upd.items():
        np.add(tot[k], np.multiply(v, 4.0, dtype=np.float64), out=tot[k])
scratch = {k: np.empty(v.shape) for k, v in upd.items()}
def add_scratch():
    for k, v in upd.items():
        s = scratch[k]; np.multiply(v, 4.0, out=s, dtype=np.float64); tot[k] += s
def isfin_sum():
    return all(np.isfinite(v.sum(dtype=np.float64)) for v in upd.values())
for _ in range(2):
    print("update_problem %.0f us | WeightedSum.add %.0f | np.add(multiply dtype f64) %.0f | scratch %.0f | isfinite via f64 sum %.0f" % (
        t(lambda: update_problem(upd, upd)), t(lambda: ws.add(upd, 4.0)), t(add_new), t(add_scratch), t(isfin_sum)))
a = WeightedSum(); a.add(upd, 4.0); a.add(upd, 3.0)
b = {k: np.multiply(v, 4.0, dtype=np.float64) for k, v in upd.items()}
for k, v in upd.items(): np.add(b[k], np.multiply(v, 3.0, dtype=np.float64), out=b[k])
print("equal", all(np.array_equal(a.total[k], b[k]) for k in b))
