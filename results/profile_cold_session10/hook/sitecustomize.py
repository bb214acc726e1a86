"""Profiling hook for Ray's worker processes (ad hoc, session 10): with FEDRAY_PROF_OUT set, once
fedray.simulation.worker is imported, every training task's CPU (process and thread clock), its
stages and whether this process had trained that hospital before are written to
$FEDRAY_PROF_OUT/actor-<pid>.jsonl, and every run_batch call's CPU too. Put this folder first on
PYTHONPATH of the launcher; Ray's workers inherit it."""
import os

if os.environ.get("FEDRAY_PROF_OUT"):
    import importlib.abc
    import importlib.machinery
    import sys

    TARGET = "fedray.simulation.worker"

    def _patch(module):
        import functools, json, resource, time
        out = open(os.path.join(os.environ["FEDRAY_PROF_OUT"], f"actor-{os.getpid()}.jsonl"), "a", buffering=1)
        seen = set()
        stage = {}

        def timed(name, f):
            @functools.wraps(f)
            def g(*a, **k):
                s = time.thread_time()
                try:
                    return f(*a, **k)
                finally:
                    stage[name] = stage.get(name, 0.0) + time.thread_time() - s
            return g

        module.train_locally = timed("train_locally", module.train_locally)
        W = module.HospitalWorker
        W._open = timed("open", W._open)
        W._global_weights = timed("global_weights", W._global_weights)
        train, run_batch, flush = W._train, W.run_batch, W.flush

        def _train(self, task):
            hid = task.hospital.hospital_id
            stage.clear()
            r0 = resource.getrusage(resource.RUSAGE_THREAD)
            p0, t0 = time.process_time(), time.thread_time()
            try:
                return train(self, task)
            finally:
                p1, t1 = time.process_time(), time.thread_time()
                r1 = resource.getrusage(resource.RUSAGE_THREAD)
                out.write(json.dumps({"kind": "task", "round": task.round, "hospital": hid, "warm": hid in seen,
                                      "cpu": p1 - p0, "thread": t1 - t0, "minflt": r1.ru_minflt - r0.ru_minflt,
                                      "majflt": r1.ru_majflt - r0.ru_majflt, **stage}) + "\n")
                seen.add(hid)

        def _run_batch(self, tasks):
            p0, t0 = time.process_time(), time.thread_time()
            try:
                return run_batch(self, tasks)
            finally:
                out.write(json.dumps({"kind": "call", "n": len(tasks), "round": tasks[0].round if tasks else None,
                                      "cpu": time.process_time() - p0, "thread": time.thread_time() - t0,
                                      "at_cpu": time.process_time(), "at": time.time()}) + "\n")

        def _flush(self, round_index):
            p0 = time.process_time()
            try:
                return flush(self, round_index)
            finally:
                out.write(json.dumps({"kind": "flush", "round": round_index, "cpu": time.process_time() - p0,
                                      "at_cpu": time.process_time(), "at": time.time(), "nice": os.nice(0)}) + "\n")

        W._train, W.run_batch, W.flush = _train, _run_batch, _flush

    class _Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != TARGET:
                return None
            sys.meta_path.remove(self)
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            if spec is None:
                return None
            loader = spec.loader
            original = loader.exec_module

            def exec_module(module):
                original(module)
                _patch(module)

            loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, _Finder())
