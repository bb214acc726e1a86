import ctypes, time, resource, sys, json, numpy as np, torch
sys.path.insert(0, "/work/h13")
torch.set_num_threads(1)
from fedray.benchmarks import bare
spec = {"channels": [8,16,32,64], "strides": [2,2,2], "num_res_units": 0, "out_channels": 8, "patch_size": [32,32,32],
        "optimizer": "adam", "lr": 1e-2, "momentum": 0.9, "weight_decay": 0.0, "batch_size": 2, "local_steps": 2}
mode = sys.argv[1]
libc = ctypes.CDLL("libc.so.6")
if mode == "tuned":
    libc.mallopt(-3, 64 << 20); libc.mallopt(-1, 256 << 20)   # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
setup = bare._bare_setup(spec, 0)
def one():
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt; c = time.process_time()
    model, loss_fn, w, batches = setup
    model.load_state_dict(w); bare.update(model, loss_fn, spec, batches, 2)
    return time.process_time() - c, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0
for _ in range(3): one()
a = np.array([one() for _ in range(int(sys.argv[2]))])
print(json.dumps([mode, float(np.median(a[:,0])*1e3), float(np.median(a[:,1]))]))
