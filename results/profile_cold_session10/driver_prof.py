"""cProfile (process CPU clock) of the driver actor over a 100 x PER_ROUND study of the scale workload
(ROUNDS rounds), through run_study in a private Ray; the per-round functions, per round.

    RAY_AUTH_MODE=token PYTHONPATH=/work/h14 nice -n 10 python results/profile_cold_session10/driver_prof.py 10 10
"""
import pstats, shutil, sys, time
from pathlib import Path
import fedray.simulation.launch as launch
from fedray.benchmarks.scale import workload
from fedray.data.federation import prepare_hospitals
per_round, rounds = int(sys.argv[1]), int(sys.argv[2])
OUT = f"/tmp/h14/driver-{per_round}.prof"

class ProfiledDriver(launch.DriverActor):
    def run(self, started):
        import cProfile, time
        profiler = cProfile.Profile(time.process_time)
        profiler.enable()
        try:
            return super().run(started)
        finally:
            profiler.disable()
            profiler.dump_stats(OUT)

launch.DriverActor = ProfiledDriver
config = workload(100, per_round, rounds, Path("/tmp/h14/work"), 2, run_suffix=f"-prof{time.time_ns()}")
prepared = prepare_hospitals(config)
summary = launch.run_study(config, prepared.hospitals, prepared.test_dir)
shutil.rmtree(config.run_dir, ignore_errors=True)
print("rounds wall", round(summary["rounds_wall_s"], 2))
stats = pstats.Stats(OUT)
stats.sort_stats("cumulative").print_stats(45)
