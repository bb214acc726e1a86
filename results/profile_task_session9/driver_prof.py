"""cProfile (CPU clock) of the driver actor over a 100x100 study of the scale workload (4 rounds), run through
run_study in a private Ray. Ad-hoc (session 9)."""
import shutil, sys
from pathlib import Path
import fedray.simulation.launch as launch
from fedray.benchmarks.scale import workload
from fedray.data.federation import prepare_hospitals

class ProfiledDriver(launch.DriverActor):
    def run(self, started):
        import cProfile, time
        profiler = cProfile.Profile(time.process_time)
        profiler.enable()
        try:
            return super().run(started)
        finally:
            profiler.disable()
            profiler.dump_stats("/tmp/h13/driver.prof")

launch.DriverActor = ProfiledDriver
config = workload(100, 100, 4, Path("/tmp/h13/bench_work"), 2, run_suffix="-prof")
prepared = prepare_hospitals(config)
shutil.rmtree(config.run_dir, ignore_errors=True)
summary = launch.run_study(config, prepared.hospitals, prepared.test_dir)
print("rounds wall", summary["rounds_wall_s"])
