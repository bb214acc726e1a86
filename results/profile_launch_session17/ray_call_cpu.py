"""CPU of one Ray actor call carrying 5 task-like dataclasses, summed over every process (driver, raylet,
actor...): with the broadcast's refs nested in each task, as top-level arguments, and with none.

    RAY_AUTH_MODE=token python ray_call_cpu.py    # output: ray_call_cpu.txt
"""
import time
from dataclasses import dataclass

import numpy as np
import psutil
import ray

ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=40)
@dataclass
class T:
    round: int
    hospital: str
    data: tuple
    payload: object
    extras: object
@ray.remote(num_cpus=1)
class A:
    def f(self, tasks): 
        for t in tasks:
            if isinstance(t.payload, ray.ObjectRef): ray.get(t.payload)
        return [None]*len(tasks)
    def g(self, tasks, payload, extras): return [None]*len(tasks)
procs = lambda: [p for p in psutil.process_iter()]
def allcpu():
    t = 0
    for p in psutil.process_iter():
        try: c = p.cpu_times(); t += c.user + c.system
        except Exception: pass
    return t
a = A.remote()
w = ray.put(np.zeros(150_000, np.float32).tobytes()); e = ray.put({})
data = tuple(("/some/path/case%d" % i, (1,2,3)) for i in range(4))
def nested(): return [T(1, "h%d"%i, data, w, e) for i in range(5)]
def flat(): return [T(1, "h%d"%i, data, None, None) for i in range(5)]
for name, call in [("nested refs", lambda: a.f.remote(nested())), ("top-level refs", lambda: a.g.remote(flat(), w, e)), ("no refs", lambda: a.g.remote(flat(), None, None))]:
    for _ in range(30): ray.get(call())
    n=300; c0=allcpu(); t0=time.perf_counter()
    for _ in range(n): ray.get(call())
    dt=time.perf_counter()-t0; c=allcpu()-c0
    print(f"{name}: wall {dt/n*1e3:.2f} ms/call, CPU all processes {c/n*1e3:.2f} ms/call")
