"""The bare network update: its floor arithmetic, that it trains the benchmark's network, and its spec."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedray.benchmarks.bare import (
    bare_update_seconds,
    concurrent_bare_floor,
    concurrent_bare_update_seconds,
    hospital_batches,
    make_loss,
    make_network,
    round_floor_s,
    spec_of,
    update,
)
from fedray.benchmarks.scale import workload
from fedray.config import config_from_data
from fedray.models.factory import build_model

TINY = {"channels": [4, 8], "strides": [2], "num_res_units": 0, "out_channels": 3, "patch_size": [16, 16, 16],
        "optimizer": "adam", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0, "batch_size": 2, "local_steps": 2}


def test_a_round_floor_is_whole_updates_per_slot():
    assert round_floor_s(100, 2, 0.05) == pytest.approx(2.5)
    assert round_floor_s(5, 2, 1.0) == 3.0  # the odd hospital takes a third turn on one slot
    assert round_floor_s(1, 2, 1.0) == 1.0


def test_the_spec_is_the_scale_workload_and_builds_fedrays_network(tmp_path):
    config = workload(10, 10, 2, tmp_path, 2)
    spec = spec_of(config, len(config.data.organs))
    assert spec["batch_size"] == 2 and spec["local_steps"] == 2 and spec["channels"] == [8, 16, 32, 64]
    torch.manual_seed(0)
    ours = make_network(spec)
    torch.manual_seed(0)
    fedrays = build_model(config.model, len(config.data.organs))
    assert ours.state_dict().keys() == fedrays.state_dict().keys()
    assert all(torch.equal(v, fedrays.state_dict()[k]) for k, v in ours.state_dict().items())
    with pytest.raises(ValueError, match="softmax MONAI U-Net"):
        spec_of(config_from_data({"name": "x", "federation": {"rule": {"count": 2}}, "model": {"name": "multihead_unet"}}), 7)


def test_an_update_takes_its_steps_on_the_given_batches():
    torch.manual_seed(0)
    model = make_network(TINY)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(0)
    images = rng.standard_normal((4, 1, 16, 16, 16), dtype=np.float32)
    labels = rng.integers(0, 3, (4, 1, 16, 16, 16)).astype(np.int64)
    batches = hospital_batches(images, labels, 2)
    assert [b[0].shape[0] for b in batches] == [2, 2]
    loss = update(model, make_loss(TINY), TINY, batches, 2)
    assert np.isfinite(loss) and loss > 0
    assert any(not torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_bare_timings_leave_out_the_warm_up_and_restore_threads():
    threads = torch.get_num_threads()
    times = bare_update_seconds(TINY, repeats=3)
    assert len(times) == 3 and all(t > 0 for t in times)
    assert torch.get_num_threads() == threads


def test_the_concurrent_floor_times_each_process_while_all_run():
    floor = concurrent_bare_floor(TINY, repeats=3, processes=2)
    assert floor["bare_concurrent_processes"] == 2 and floor["bare_concurrent_threads"] == 1
    assert [len(t) for t in floor["bare_concurrent_s"]] == [3, 3]  # the repeats of each process
    assert floor["bare_concurrent_s_medians"] == [sorted(t)[1] for t in floor["bare_concurrent_s"]]
    low, high = sorted(floor["bare_concurrent_s_medians"])
    assert low <= floor["bare_concurrent_update_s"] <= high and low > 0  # their combined rate, per slot
    with pytest.raises(ValueError, match="must be >= 1"):
        concurrent_bare_update_seconds(TINY, repeats=0, processes=2)


def test_a_failing_concurrent_process_is_reported():
    with pytest.raises(RuntimeError, match="bare-update process failed"):
        concurrent_bare_update_seconds({**TINY, "channels": []}, repeats=1, processes=1, timeout_s=120)
