"""Fork A/B of glibc malloc settings: parent imports torch and builds nothing; each child sets (or not) mallopt,
builds the bare setup, warms up 3 updates, times N updates (process CPU, minor faults). Alternating children."""
import ctypes, os, time, resource, sys, json, numpy as np, torch
sys.path.insert(0, "/work/h13")
torch.set_num_threads(1)
from fedray.benchmarks import bare
spec = {"channels": [8,16,32,64], "strides": [2,2,2], "num_res_units": 0, "out_channels": 8, "patch_size": [32,32,32],
        "optimizer": "adam", "lr": 1e-2, "momentum": 0.9, "weight_decay": 0.0, "batch_size": 2, "local_steps": 2}
libc = ctypes.CDLL("libc.so.6")
def child(mode, n, w):
    if mode == "tuned":
        libc.mallopt(-3, 64 << 20); libc.mallopt(-1, 256 << 20)
    setup = bare._bare_setup(spec, 0)
    def one():
        r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt; c = time.process_time()
        model, loss_fn, wts, batches = setup
        model.load_state_dict(wts); bare.update(model, loss_fn, spec, batches, 2)
        return time.process_time() - c, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0
    for _ in range(3): one()
    a = np.array([one() for _ in range(n)])
    os.write(w, (json.dumps([mode, float(np.median(a[:,0])*1e3), float(np.median(a[:,1]))]) + "\n").encode())
out = {"default": [], "tuned": []}
for i in range(int(sys.argv[1])):
    for mode in ("default", "tuned") if i % 2 == 0 else ("tuned", "default"):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r); child(mode, int(sys.argv[2]), w); os._exit(0)
        os.close(w); line = os.read(r, 1000).decode(); os.waitpid(pid, 0); os.close(r)
        m, ms, flt = json.loads(line); out[m].append((ms, flt))
for m, v in out.items():
    a = np.array(v); print(m, "per-child medians CPU ms:", np.round(a[:,0], 1).tolist(), "| median of medians %.2f ms, minflt %.0f" % (np.median(a[:,0]), np.median(a[:,1])))
d, t = np.array(out["default"])[:,0], np.array(out["tuned"])[:,0]
print("paired tuned/default ratio median %.3f, mean %.3f" % (np.median(t/d), np.mean(t/d)))
