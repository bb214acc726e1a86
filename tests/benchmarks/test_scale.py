"""The scale benchmark: its arithmetic (E from hand-computed rounds), its memory sampler, and the command end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pandas as pd
import pytest

from fedray.benchmarks.scale import PeakMemory, efficiency, summarise
from fedray.messages import Metric


def test_efficiency_is_the_sum_of_floors_over_the_wall():
    rounds = pd.DataFrame(
        {
            Metric.COMPUTE_MAX_S.value: [1.0, 3.0],  # round 2: one straggler longer than the even share
            Metric.COMPUTE_SUM_S.value: [4.0, 4.0],
            Metric.TRAIN_S.value: [2.5, 4.0],
            "clients": [4, 4],
        }
    )
    # floors with 2 slots: max(1, 4/2) = 2 and max(3, 4/2) = 3; the study's wall adds 0.5 s between rounds
    got = efficiency(rounds, slots=2, wall_s=7.0, bare_update_s=0.5)
    assert got["floor_s"] == 5.0 and got["wall_s"] == 7.0 and got["rounds_s"] == 6.5
    assert got["efficiency_vs_own_update"] == pytest.approx(5 / 7.0)
    assert got["efficiency_rounds"] == pytest.approx(5 / 6.5)
    assert got["hospital_update_s_median"] == 1.0
    # bare floor: 2 rounds x ceil(4 / 2) x 0.5 s = 2 s; slot time per task 7 x 2 / 8 = 1.75 s, less 0.5 s
    assert got["bare_floor_s"] == 2.0 and got["efficiency_vs_bare_update"] == pytest.approx(2 / 7.0)
    assert got["overhead_per_task_ms"] == pytest.approx(1250.0)
    assert got["own_update_overhead_ms"] == pytest.approx(500.0)
    assert "efficiency_vs_bare_update" not in efficiency(rounds, slots=2, wall_s=7.0)
    assert "efficiency_vs_bare_concurrent" not in got
    # the concurrent floor: the same rounds at 0.7 s per update (two at once): 2 x 2 x 0.7 = 2.8 s
    both = efficiency(rounds, slots=2, wall_s=7.0, bare_update_s=0.5, bare_concurrent_update_s=0.7)
    assert both["bare_concurrent_floor_s"] == pytest.approx(2.8) and both["bare_concurrent_update_s"] == 0.7
    assert both["efficiency_vs_bare_concurrent"] == pytest.approx(0.4)
    assert both["efficiency_vs_bare_update"] == got["efficiency_vs_bare_update"]  # the figure alone is kept


def test_targets_pick_their_scenarios():
    results = [
        {"hospitals": 10, "per_round": 10, "efficiency_vs_own_update": 0.8, "efficiency_vs_bare_update": 0.6,
         "launch_to_first_round_s": 7.0, "peak_pss_gb": 1.0, "cli_launch_to_first_round_s": [9.5, 8.0, 12.0, 9.0, 8.5]},
        {"hospitals": 1000, "per_round": 100, "efficiency_vs_own_update": 0.9, "efficiency_vs_bare_update": 0.7,
         "launch_to_first_round_s": 9.0, "peak_pss_gb": 2.5, "cli_launch_to_first_round_s": [10.5]},
    ]
    targets = summarise(results)
    assert targets["E_vs_own_update_at_100_per_round (target >= 0.85)"] == 0.9
    assert targets["E_vs_own_update_at_10_per_round (target >= 0.7)"] == 0.8
    assert targets["E_vs_bare_update_at_100_per_round (target >= 0.9)"] == 0.7
    assert targets["E_vs_bare_update_at_10_per_round (target >= 0.8)"] == 0.6
    assert targets["E_vs_bare_concurrent_at_100_per_round"] is None  # no scenario has the figure
    assert targets["first_round_s_fedray_run_median (target <= 10)"] == 9.25  # of all six `fedray run`s
    assert targets["first_round_s_fedray_run_max"] == 12.0
    assert targets["first_round_s_in_process_max"] == 9.0
    assert targets["peak_pss_gb_1000x100 (target <= 3)"] == 2.5


def test_cpu_seconds_of_a_span_difference_the_samples_around_it():
    memory = PeakMemory()
    memory.cpu = [(10.0, {1: 5.0, 2: 1.0}), (11.0, {1: 6.0, 2: 1.5}), (12.0, {1: 7.5, 3: 0.25})]
    # from the sample at 10 to the one at 12: pid 1 +2.5, pid 3 (new) +0.25; pid 2 exited unsampled
    assert memory.cpu_seconds(10.5, 12.9) == pytest.approx(2.75)
    assert memory.cpu_seconds(11.0, 11.5) == 0.0


def test_peak_memory_counts_child_processes():
    hold = "import time; x = bytearray(300 * 1024 * 1024); x[::4096] = b'1' * len(x[::4096]); time.sleep(3)"
    with PeakMemory(interval_s=0.1) as alone:
        pass
    child = subprocess.Popen([sys.executable, "-c", hold])
    try:
        with PeakMemory(interval_s=0.1) as memory:
            import time

            time.sleep(2.0)
    finally:
        child.wait()
    assert memory.peak_pss - alone.peak_pss > 250e6  # the child's 300 MB, touched page by page
    assert memory.peak_rss >= memory.peak_pss
    assert all(child.pid in pids for _, pids in memory.cpu)  # CPU kept per process of the tree


def test_cpu_only_sampling_keeps_each_process_cpu_and_reads_no_memory():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(2)"])
    try:
        with PeakMemory(interval_s=0.1, memory=False) as usage:
            time.sleep(0.5)
    finally:
        child.wait()
    assert usage.peak_pss == usage.peak_rss == 0  # no page tables walked
    assert usage.cpu and all(child.pid in pids and os.getpid() in pids for _, pids in usage.cpu)


@pytest.mark.slow  # a minute: the figures' arithmetic is tested above by hand
def test_bench_scale_writes_its_figures_and_plot(tmp_path):
    out = tmp_path / "bench_scale.json"
    done = subprocess.run(
        [sys.executable, "-m", "fedray.cli", "bench", "scale", "--scenarios", "10x10", "--rounds", "2", "--cli-runs", "2",
         "--bare-repeats", "3", "--work-dir", str(tmp_path / "work"), "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(out.read_text())
    [scenario] = record["scenarios"]
    assert record["ray"] == "started by each study" and scenario["hospitals"] == scenario["per_round"] == 10
    assert scenario["actors"] == 2 and scenario["rounds"] == 2
    assert 0 < scenario["floor_s"] <= scenario["rounds_s"] <= scenario["wall_s"]  # the span holds the rounds
    assert scenario["efficiency_vs_own_update"] == pytest.approx(scenario["floor_s"] / scenario["wall_s"])
    bare = record["bare_update"]
    assert len(bare["s_before"]) == len(bare["s_after"]) == 3 and scenario["bare_update_s"] == bare["s_median_before"]
    assert [f["s"] for f in bare["before_each_scenario"]] == [bare["s_before"]]  # timed again before each scenario
    # 2 rounds x ceil(10 / 2 actors) bare updates
    assert scenario["bare_floor_s"] == pytest.approx(2 * 5 * bare["s_median_before"])
    assert 0 < scenario["efficiency_vs_bare_update"] == pytest.approx(scenario["bare_floor_s"] / scenario["wall_s"])
    concurrent = bare["concurrent"]
    assert concurrent["processes"] == 2 and [len(t) for t in concurrent["s_each"]] == [3, 3]
    assert scenario["bare_concurrent_update_s"] == concurrent["s"]
    assert scenario["bare_concurrent_floor_s"] == pytest.approx(2 * 5 * concurrent["s"])
    assert scenario["efficiency_vs_bare_concurrent"] == pytest.approx(scenario["bare_concurrent_floor_s"] / scenario["wall_s"])
    assert 0 < scenario["launch_to_first_round_s"] < 120 and scenario["peak_pss_gb"] > 0.3
    assert len(scenario["cli_launch_to_first_round_s"]) == 2  # `fedray run` in a new process, twice
    assert all(0 < t < 120 for t in scenario["cli_launch_to_first_round_s"])
    assert record["targets"]["first_round_s_fedray_run_max"] == max(scenario["cli_launch_to_first_round_s"])
    assert record["targets"]["E_vs_own_update_at_10_per_round (target >= 0.7)"] == scenario["efficiency_vs_own_update"]
    assert record["targets"]["E_vs_bare_update_at_10_per_round (target >= 0.8)"] == scenario["efficiency_vs_bare_update"]
    assert out.with_suffix(".png").stat().st_size > 10_000


@pytest.mark.skipif(sys.platform != "linux", reason="a thread's own priority is a Linux feature")
def test_the_sampler_yields_to_the_study_and_leaves_its_own_cpu_out():
    before = os.getpriority(os.PRIO_PROCESS, 0)
    with PeakMemory(interval_s=0.05) as memory:
        while not memory.cpu:
            time.sleep(0.01)
        assert os.getpriority(os.PRIO_PROCESS, memory._thread.native_id) == 19
        assert os.getpriority(os.PRIO_PROCESS, 0) == before  # the launcher itself keeps its priority
    memory.sample()
    memory.sample(own_cpu_s=1000.0)
    assert memory.cpu[-1][1][os.getpid()] < memory.cpu[-2][1][os.getpid()] - 999
