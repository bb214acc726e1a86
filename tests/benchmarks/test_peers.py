"""The peers benchmark: its arithmetic and data hand-off without the peers, and each peer in a tiny smoke run
where it is installed (for this interpreter, or the one FEDRAY_PEER_PYTHON names)."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from fedray.benchmarks.peers import (
    PEERS,
    Peer,
    ceilings,
    export_hospitals,
    fedray_round_figures,
    paired_ratios,
    peer_version,
    run_peer,
    summarise,
)

PEER_PYTHON = os.environ.get("FEDRAY_PEER_PYTHON", sys.executable)
TINY = {"channels": [4, 8], "strides": [2], "num_res_units": 0, "out_channels": 3, "patch_size": [16, 16, 16],
        "optimizer": "adam", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0, "batch_size": 2, "local_steps": 2}


def test_fedray_rounds_count_the_driver_between_rounds():
    # 5 rounds: 10 s of rounds, 12 s of wall, so 2 s over the 4 gaps between them
    got = fedray_round_figures({"rounds": 5, "wall_s": 12.0, "rounds_s": 10.0, "round_s_median": 1.8})
    assert got == {"round_s_median": 2.3, "round_s_mean": 2.4, "between_rounds_s_mean": 0.5}


def test_targets_divide_fedrays_median_round_by_each_peers():
    scenarios = [
        {"total": 100, "per_round": 100, "fedray": {"round_s_median": 3.0},
         "fedray_runs": [{"cpu_ms_per_task": 60.0}, {"cpu_ms_per_task": 80.0}],
         "peers": {"pfl": {"round_s_median": 4.0, "cpu_ms_per_task": 35.0},
                   "flower": {"round_s_median": 6.0, "cpu_ms_per_task": 140.0}}},
        {"total": 100, "per_round": 10, "fedray": {"round_s_median": 1.0}, "fedray_runs": [{"cpu_ms_per_task": 50.0}],
         "peers": {"flower": {"round_s_median": 2.0, "cpu_ms_per_task": 100.0}}},
    ]
    targets = summarise(scenarios)
    assert targets["fedray_over_pfl_at_100_per_round (target <= 0.95)"] == 0.75
    assert targets["fedray_over_flower_at_100_per_round (target <= 0.6)"] == 0.5
    assert targets["fedray_over_pfl_at_10_per_round (target <= 0.95)"] is None  # pfl not run there
    assert targets["cpu_per_task_fedray_over_pfl"] == {"100x100": 2.0, "100x10": None}  # median of 60 and 80 over 35
    assert targets["cpu_per_task_fedray_over_flower"] == {"100x100": 0.5, "100x10": 0.5}


def test_paired_ratios_divide_repeat_by_repeat_and_the_target_takes_their_median():
    fedray = [{"round_s_median": t, "cpu_ms_per_task": 1.0} for t in (3.0, 4.0, 2.0)]
    pfl = [{"round_s_median": 2.0}, {"round_s_median": 5.0}, {"round_s_median": 4.0}]
    paired = paired_ratios(fedray, pfl)
    assert paired == {"per_repeat": [1.5, 0.8, 0.5], "median": 0.8}  # the ratio of medians would say 3/4 = 0.75
    scenario = {"total": 100, "per_round": 100, "fedray": {"round_s_median": 3.0}, "fedray_runs": fedray,
                "peers": {"pfl": {"round_s_median": 4.0, "cpu_ms_per_task": 1.0}}, "paired": {"pfl": paired}}
    assert summarise([scenario])["fedray_over_pfl_at_100_per_round (target <= 0.95)"] == 0.8


def test_hospitals_are_stacked_for_the_peers(tmp_path):
    case = {"image": np.ones((1, 4, 4, 4), np.float32), "label": np.full((1, 4, 4, 4), 2, np.uint8),
            "labelled": np.ones(7, bool)}
    path = export_hospitals([[case, case], [case, case], [case, case]], tmp_path / "h.npz")
    with np.load(path) as archive:
        assert archive["images"].shape == archive["labels"].shape == (3, 2, 1, 4, 4, 4)
        assert archive["labels"].dtype == np.int64 and archive["labels"].max() == 2


def test_a_missing_peer_has_no_version():
    assert peer_version(sys.executable, Peer("nothing", "fedray-no-such-distribution", "x")) is None
    assert peer_version(sys.executable, Peer("fedray", "fedray", "x")) is not None


@pytest.mark.parametrize("name", sorted(PEERS))
def test_a_peer_runs_the_workload(name, tmp_path):
    if peer_version(PEER_PYTHON, PEERS[name]) is None:
        pytest.skip(f"{PEERS[name].distribution} is not installed for {PEER_PYTHON} (set FEDRAY_PEER_PYTHON)")
    rng = np.random.default_rng(0)
    images = rng.standard_normal((4, 4, 1, 16, 16, 16), dtype=np.float32)
    labels = rng.integers(0, 3, (4, 4, 1, 16, 16, 16))
    np.savez(tmp_path / "h.npz", images=images, labels=labels)
    spec = {**TINY, "data": str(tmp_path / "h.npz"), "total": 4, "per_round": 2, "rounds": 2, "cpus": 2, "seed": 0}
    got = run_peer(PEERS[name], PEER_PYTHON, spec, tmp_path / "peer", timeout_s=300)
    assert got["version"] and len(got["round_s"]) == 2 and all(t > 0 for t in got["round_s"])
    assert 0 < got["launch_to_first_round_done_s"] <= got["process_s"]


def test_a_peer_that_crashes_is_run_once_more_and_the_crash_is_recorded(tmp_path):
    flaky = Peer("flaky", "none", "tests.benchmarks.flaky_peer")
    spec = {"cpus": 2, "per_round": 10, "rounds": 3}
    got = run_peer(flaky, sys.executable, spec, tmp_path / "first", timeout_s=120)
    assert got["round_s_median"] == 0.5 and len(got["failed_attempts"]) == 1
    assert "terminate called" in got["failed_attempts"][0]
    with pytest.raises(RuntimeError, match="terminate called"):  # with no second attempt, the crash is raised
        run_peer(flaky, sys.executable, spec, tmp_path / "second", timeout_s=120, attempts=1)


def _scenario_with_floors() -> dict:
    """Two repeats of a 10-per-round scenario on 2 CPUs (5 updates a slot), with floors and both peers."""
    return {
        "total": 100, "per_round": 10, "cpus": 2, "repeats": 2,
        "bare_update_s_medians": [0.036, 0.040], "bare_concurrent_update_s": [0.040, 0.050],
        "fedray": {"round_s_median": 0.25},
        "fedray_runs": [{"round_s_median": 0.25, "cpu_ms_per_task": 1.0}, {"round_s_median": 0.3125, "cpu_ms_per_task": 1.0}],
        # each peer run's E against the concurrent floor as `bench peers` stores it: 5 x 0.040 / 0.2, 5 x 0.050 / 0.25
        "peers": {"pfl": {"round_s_median": 0.22, "cpu_ms_per_task": 1.0,
                          "runs": [{"round_s_median": 0.2, "efficiency_vs_bare_concurrent": 1.0},
                                   {"round_s_median": 0.25, "efficiency_vs_bare_concurrent": 1.0}]},
                  "flower": {"round_s_median": 0.5, "cpu_ms_per_task": 1.0,
                             "runs": [{"round_s_median": 0.4, "efficiency_vs_bare_concurrent": 0.5},
                                      {"round_s_median": 0.5, "efficiency_vs_bare_concurrent": 0.5}]}},
    }


def test_ceilings_are_the_measured_floors_ratios_repeat_by_repeat():
    got = ceilings(_scenario_with_floors())
    # a framework adding nothing: the update alone over the concurrent one, 0.036/0.040 and 0.040/0.050
    assert got["zero_overhead_e_vs_bare"]["per_repeat"] == pytest.approx([0.9, 0.8])
    assert got["zero_overhead_e_vs_bare"]["median"] == pytest.approx(0.85)
    # concurrent floor round (5 updates a slot) over each median round: 0.2/0.25, 0.25/0.3125
    assert got["fedray_e_vs_bare_concurrent"]["per_repeat"] == pytest.approx([0.8, 0.8])
    assert got["pfl_e_vs_bare_concurrent"]["per_repeat"] == pytest.approx([1.0, 1.0])
    assert got["flower_e_vs_bare_concurrent"]["per_repeat"] == pytest.approx([0.5, 0.5])
    # fedray/pfl at 0.95 needs E 1.0/0.95 here: faster than the bare update; fedray/flower at 0.6 needs 0.5/0.6
    pfl, flower = got["fedray_needs_e_vs_bare_concurrent"]["pfl"], got["fedray_needs_e_vs_bare_concurrent"]["flower"]
    assert (pfl["target_ratio"], pfl["median"]) == (0.95, pytest.approx(1 / 0.95))
    assert (flower["target_ratio"], flower["median"]) == (0.6, pytest.approx(0.5 / 0.6))
    summary = summarise([_scenario_with_floors()])["ceilings"]["100x10"]
    assert summary["zero_overhead_e_vs_bare (median)"] == pytest.approx(0.85)
    assert summary["fedray_needs_e_vs_bare_concurrent_for_pfl (median)"] == pytest.approx(1 / 0.95)


def test_bench_ceilings_reads_a_peers_run_and_refuses_anything_else(tmp_path, capsys):
    import json

    from fedray.cli import main

    run = tmp_path / "peers.json"
    run.write_text(json.dumps({"benchmark": "peers", "scenarios": [_scenario_with_floors()]}))
    out = tmp_path / "ceilings.json"
    assert main(["bench", "ceilings", str(run), "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["runs"][0]["scenarios"][0]["ceilings"]["zero_overhead_e_vs_bare"]["median"] == pytest.approx(0.85)
    printed = " ".join(capsys.readouterr().err.split())  # fedray's console writes to stderr, wrapped
    assert "scores E 0.85 against the bare update alone" in printed
    other = tmp_path / "scale.json"
    other.write_text(json.dumps({"benchmark": "scale", "scenarios": []}))
    assert main(["bench", "ceilings", str(other)]) != 0
    assert "not a readable `fedray bench peers` JSON" in " ".join(capsys.readouterr().err.split())
