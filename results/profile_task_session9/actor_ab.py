"""A/B inside one process: bare update vs fedray task; in-process or in a Ray actor. Ad-hoc (session 9)."""
import os, sys, time, resource, statistics, json, gc, threading
from pathlib import Path
import numpy as np

WORK = Path("/tmp/h13/work")

def env_snapshot():
    import torch
    maps = open("/proc/self/maps").read()
    return {
        "threads_torch": torch.get_num_threads(), "interop": torch.get_num_interop_threads(),
        "mkldnn": torch.backends.mkldnn.enabled, "grad": torch.is_grad_enabled(),
        "determ": torch.are_deterministic_algorithms_enabled(),
        "env": {k: v for k, v in os.environ.items() if k.startswith(("OMP", "MKL", "KMP", "MALLOC", "LD_", "GOMP", "TORCH", "PYTORCH", "DNNL", "ONEDNN"))},
        "malloc_libs": sorted({l.split()[-1] for l in maps.splitlines() if "malloc" in l and "/" in l}),
        "os_threads": len(os.listdir("/proc/self/task")), "main_thread": threading.current_thread() is threading.main_thread(),
        "gc": [gc.isenabled(), gc.get_threshold()], "nice": os.nice(0), "switch": sys.getswitchinterval(),
        "affinity": sorted(os.sched_getaffinity(0)),
    }

def body(n=40, order="ab"):
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    import torch
    from fedray.benchmarks import bare
    from fedray.benchmarks.scale import workload
    from fedray.data.case_store import Recipe, stored_cases
    from fedray.data.datasets import ensure_stored
    from fedray.data.federation import prepare_hospitals
    from fedray.messages import TrainTask, encode_state
    from fedray.simulation import worker as worker_module
    config = workload(100, 10, 5, WORK, 2)
    hospitals = prepare_hospitals(config).hospitals
    data = {h.hospital_id: stored_cases(h, config.data) for h in hospitals}
    for refs in data.values():
        for ref in refs:
            ensure_stored(ref, Recipe.of(config.data))
    worker = worker_module.HospitalWorker(config, threads=1)
    payload = encode_state({k: v.numpy().copy() for k, v in worker.model.state_dict().items()})
    spec = bare.spec_of(config, len(config.data.organs))
    model, loss = bare.make_network(spec), bare.make_loss(spec)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(0)
    shape = (spec["batch_size"] * spec["local_steps"], 1, *spec["patch_size"])
    batches = bare.hospital_batches(rng.standard_normal(shape, dtype=np.float32),
                                    rng.integers(0, spec["out_channels"], shape).astype(np.int64), spec["batch_size"])
    def clocks():
        r = resource.getrusage(resource.RUSAGE_THREAD)
        return np.array([time.thread_time(), time.process_time(), time.perf_counter(), r.ru_minflt])
    def bare_update():
        s = clocks(); model.load_state_dict(weights); bare.update(model, loss, spec, batches, spec["local_steps"]); return clocks() - s
    def task(i):
        r, h = 1 + i // 5, hospitals[i % len(hospitals)]
        s = clocks(); worker.run(TrainTask(r, h, data[h.hospital_id], payload))
        if i % 5 == 4: worker.flush(r)
        return clocks() - s
    for i in range(5): bare_update(); task(i)
    B, T = [], []
    for i in range(5, 5 + n):
        if order == "ab" or i % 2: B.append(bare_update()); T.append(task(i))
        else: T.append(task(i)); B.append(bare_update())
    B, T = np.array(B), np.array(T)
    med = lambda a: [float(np.median(a[:, j])) for j in range(4)]
    return {"env": env_snapshot(), "bare": med(B), "task": med(T), "bare_mean": B.mean(0).tolist(), "task_mean": T.mean(0).tolist()}

def show(tag, r):
    b, t = r["bare"], r["task"]
    print(f"{tag}: median thread-CPU bare {b[0]*1e3:.2f} task {t[0]*1e3:.2f} ({t[0]/b[0]:.3f}x) | process-CPU bare {b[1]*1e3:.2f} task {t[1]*1e3:.2f} ({t[1]/b[1]:.3f}x) | wall bare {b[2]*1e3:.2f} task {t[2]*1e3:.2f} | minflt bare {b[3]:.0f} task {t[3]:.0f}")
    print("   mean minflt bare %.0f task %.0f" % (r["bare_mean"][3], r["task_mean"][3]))
    print("  ", json.dumps(r["env"]))

if __name__ == "__main__":
    mode = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    if mode == "local":
        import torch; torch.set_num_threads(1)
        show("in-process", body(n))
    else:
        import ray
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=True)
        f = ray.remote(num_cpus=1)(body)
        show("ray task", ray.get(f.remote(n)))
        @ray.remote(num_cpus=1)
        class A:
            def go(self, n): return body(n)
        a = A.remote()
        show("ray actor", ray.get(a.go.remote(n)))
        ray.shutdown()
