"""Wall time the driver actor spends per round in each step between two rounds' hospital work, over a
100 x PER_ROUND study of the scale workload (ROUNDS rounds): medians over rounds 2.., in ms.

    RAY_AUTH_MODE=token python results/profile_timeline_session11/driver_spans.py 10 20
"""
import json
import statistics as st
import sys
import time
from pathlib import Path

from fedray.benchmarks.scale import workload
from fedray.data.federation import prepare_hospitals
from fedray.simulation import launch

per_round, rounds = int(sys.argv[1]), int(sys.argv[2])
OUT = Path(f"/tmp/tl11/spans-{per_round}.json")


class TimedDriver(launch.DriverActor):
    def run(self, started):
        import fedray.simulation.driver as driver_module
        from fedray.simulation.ledger import RoundLedger
        from fedray.simulation.scheduler import RoundScheduler
        from fedray.tracking.callbacks import CallbackList

        spans: dict[str, list[float]] = {}

        def timed(owner, name, label):
            original = getattr(owner, name)

            def wrapper(*args, **kwargs):
                start = time.perf_counter()
                try:
                    return original(*args, **kwargs)
                finally:
                    spans.setdefault(label, []).append(1e3 * (time.perf_counter() - start))

            setattr(owner, name, wrapper)

        timed(driver_module.Driver, "_sample", "sample")
        timed(driver_module.Driver, "_weights_ref", "weights encode+put")
        timed(RoundScheduler, "train_round", "train_round (whole)")
        timed(RoundScheduler, "_data", "case keys (_data)")
        timed(RoundLedger, "merge", "merge a partial sum")
        timed(RoundLedger, "new_global_state", "new global state")
        timed(CallbackList, "on_round_end", "round-end callbacks")
        timed(driver_module, "round_row", "round_row")
        timed(driver_module, "hospital_rows", "hospital_rows")
        try:
            return super().run(started)
        finally:
            OUT.write_text(json.dumps(spans))


launch.DriverActor = TimedDriver
config = workload(100, per_round, rounds, Path("/tmp/tl11/work"), 2, run_suffix=f"-sp{time.time_ns()}")
prepared = prepare_hospitals(config)
summary = launch.run_study(config, prepared.hospitals, prepared.test_dir)
spans = json.loads(OUT.read_text())
per_round_calls = {k: len(v) / rounds for k, v in spans.items()}
for label, values in spans.items():
    k = max(1, round(per_round_calls[label]))
    per = [sum(values[i:i + k]) for i in range(k, len(values), k)]  # round 1 left out
    print(f"{label:24s} {per_round_calls[label]:5.1f} calls/round, median {st.median(per):7.2f} ms/round")
