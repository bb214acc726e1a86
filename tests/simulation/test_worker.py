"""A hospital actor's round, run in-process: the partial sum it flushes equals folding each update."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from fedray.config import config_from_data, with_absolute_paths
from fedray.data.case_store import stored_cases
from fedray.data.federation import prepare_hospitals
from fedray.messages import PrepareTask, TrainTask, encode_state
from fedray.models.factory import build_model
from fedray.simulation.ledger import RoundLedger
from fedray.data import patches
from fedray.simulation import worker as worker_module
from fedray.simulation.worker import HospitalWorker
from fedray.training.hooks import ClientHooks
from tests.conftest import tiny_study


def test_partial_sum_equals_per_hospital_updates_and_failures_are_reported(tmp_path):
    config = with_absolute_paths(config_from_data(tiny_study(tmp_path)))
    hospitals, _ = prepare_hospitals(config)
    worker = HospitalWorker(config, threads=1)
    torch.manual_seed(0)
    initial = {k: v.numpy() for k, v in build_model(config.model, len(config.data.organs)).state_dict().items()}
    payload = encode_state(initial)
    data = {h.hospital_id: stored_cases(h, config.data) for h in hospitals}  # written on first use

    reports = [
        worker.run(TrainTask(1, h, data[h.hospital_id], payload, slowdown=1e9 if h.hospital_id == "b" else 1.0, deadline_s=1e6))
        for h in hospitals
    ]
    summed = worker.flush(1)
    assert all(r.result is None and r.failed is None for r in reports)  # updates stay in the partial sum
    assert summed.count == 2 and summed.account.late == ["b"]  # b was slowed past the deadline
    assert worker.flush(1).count == 0  # flushed once, then forgotten

    worker.strategy.partial_aggregation = False  # as a method with non-linear aggregation would
    one_by_one = [worker.run(TrainTask(1, h, data[h.hospital_id], payload)) for h in hospitals]
    garbled = tmp_path / "garbled"
    shutil.copytree(data["a"][0].folder, garbled)
    np.save(garbled / "image.npy", np.zeros((3, 3), np.float32))  # a 2-D image: training raises
    broken = worker.run(TrainTask(1, hospitals[0], [replace(data["a"][0], folder=garbled)], payload))
    assert broken.failed is not None and broken.result is None  # reported for retry, not raised

    hierarchical, flat = RoundLedger(worker.strategy, initial), RoundLedger(worker.strategy, initial)
    hierarchical.merge(summed)
    for report in one_by_one:
        if report.hospital_id != "b":
            flat.add(report.result)
    new_h, new_f = hierarchical.new_global_state(), flat.new_global_state()
    assert all(np.array_equal(new_h[k], new_f[k]) for k in new_h)  # same RNG per (seed, round, hospital)
    assert not all(np.array_equal(new_h[k], initial[k]) for k in new_h)
    assert hierarchical.account.bytes_down == 3 * len(payload)
    assert hierarchical.account.bytes_up == flat.account.bytes_up == 2 * len(payload)


class Sink:
    """Stands in for the driver actor's handle: records `hospital_steps.remote(...)` calls."""

    def __init__(self) -> None:
        self.calls = []
        self.hospital_steps = self

    def remote(self, *args) -> None:
        self.calls.append(args)


def test_a_watched_hospital_reports_its_steps_and_trains_bit_identically(tmp_path, monkeypatch):
    config = with_absolute_paths(config_from_data(tiny_study(tmp_path, train={"local_steps": 3, "batch_size": 1})))
    hospitals, _ = prepare_hospitals(config)
    worker = HospitalWorker(config, threads=1)
    worker.strategy.partial_aggregation = False  # the update comes back in the report
    torch.manual_seed(0)
    payload = encode_state({k: v.numpy() for k, v in build_model(config.model, len(config.data.organs)).state_dict().items()})
    data = stored_cases(hospitals[0], config.data)  # written on first use
    untold = worker.run(TrainTask(1, hospitals[0], data, payload))
    fast = Sink()
    worker.report_steps_to(fast)
    worker.run(TrainTask(1, hospitals[0], data, payload))
    assert fast.calls == []  # finished within STEP_REPORT_S: nothing sent
    monkeypatch.setattr(worker_module, "STEP_REPORT_S", 0.0)
    sink = Sink()
    worker.report_steps_to(sink)
    told = worker.run(TrainTask(2, hospitals[0], data, payload))
    assert sink.calls == [(2, "a", 1, 3), (2, "a", 2, 3), (2, "a", 3, 3)]
    again = worker.run(TrainTask(1, hospitals[0], data, payload))
    assert again.result.payload == untold.result.payload and told.result.payload != untold.result.payload
    assert len(sink.calls) == 6  # reported, and trained bit-identically to the unwatched task


def test_a_watched_preparation_job_reports_its_steps_under_its_key_and_trains_the_same_teacher(tmp_path, monkeypatch):
    study = tiny_study(tmp_path, model={"name": "multihead_unet", "output": "sigmoid", "channels": [4, 8, 16], "norm_groups": 2},
                       method={"name": "fedkd", "params": {"teacher_steps": 3}})
    config = with_absolute_paths(config_from_data(study))
    hospitals, _ = prepare_hospitals(config)
    worker = HospitalWorker(config, threads=1)
    worker.strategy.setup(config.data.organs, hospitals, worker.model)
    job = worker.strategy.preparation()[0]
    task = PrepareTask(job, stored_cases(job.hospital, config.data))
    unwatched = worker.run(task)
    monkeypatch.setattr(worker_module, "STEP_REPORT_S", 0.0)
    sink = Sink()
    worker.report_steps_to(sink)
    watched = worker.run(task)
    assert sink.calls == [(0, "teacher/a", 1, 3), (0, "teacher/a", 2, 3), (0, "teacher/a", 3, 3)]  # round 0: preparation
    assert watched.prepared == unwatched.prepared  # reporting changes nothing the job computes
    worker.run(TrainTask(1, hospitals[0], stored_cases(hospitals[0], config.data), encode_state(
        {k: v.numpy() for k, v in build_model(config.model, len(config.data.organs)).state_dict().items()})))
    assert all(call[0] == 1 for call in sink.calls[3:])  # the job's name is not left behind for training


def test_a_cpu_task_draws_one_batch_per_step_and_starts_no_prefetch_thread(tmp_path, monkeypatch):
    config = with_absolute_paths(config_from_data(tiny_study(tmp_path, train={"local_steps": 3, "batch_size": 1})))
    hospitals, _ = prepare_hospitals(config)
    worker = HospitalWorker(config, threads=1)
    worker.strategy.partial_aggregation = False
    torch.manual_seed(0)
    payload = encode_state({k: v.numpy() for k, v in build_model(config.model, len(config.data.organs)).state_dict().items()})
    data = stored_cases(hospitals[0], config.data)
    reference = worker.run(TrainTask(1, hospitals[0], data, payload))
    drawn, threads = [], []
    batches = worker._sampler.batches

    def counted(cases, seed):
        for batch in batches(cases, seed):
            drawn.append(seed)
            yield batch

    monkeypatch.setattr(worker._sampler, "batches", counted)
    monkeypatch.setattr(patches.Prefetched, "__init__", lambda *args: threads.append(args))
    again = worker.run(TrainTask(1, hospitals[0], data, payload))
    assert len(drawn) == 3 and threads == []  # the steps' batches, drawn inline on the CPU
    assert again.result.payload == reference.result.payload


def test_a_batch_reports_each_hospital_as_one_call_each_would_and_a_failure_spares_the_rest(tmp_path):
    config = with_absolute_paths(config_from_data(tiny_study(tmp_path)))
    hospitals, _ = prepare_hospitals(config)
    worker = HospitalWorker(config, threads=1)
    worker.strategy.partial_aggregation = False  # the updates come back in the reports
    torch.manual_seed(0)
    payload = encode_state({k: v.numpy() for k, v in build_model(config.model, len(config.data.organs)).state_dict().items()})
    data = {h.hospital_id: stored_cases(h, config.data) for h in hospitals}
    one_by_one = [worker.run(TrainTask(1, h, data[h.hospital_id], payload)) for h in hospitals]
    garbled = tmp_path / "garbled"
    shutil.copytree(data["b"][0].folder, garbled)
    np.save(garbled / "image.npy", np.zeros((3, 3), np.float32))  # a 2-D image: b's training raises
    tasks = [TrainTask(1, h, data[h.hospital_id], payload) for h in hospitals]
    broken = replace(tasks[1], data=[replace(data["b"][0], folder=garbled)])
    batch = worker.run_batch([tasks[0], broken, tasks[2]])
    assert [r.hospital_id for r in batch] == ["a", "b", "c"]
    assert batch[1].failed is not None and batch[1].result is None
    assert [batch[0].result.payload, batch[2].result.payload] == [one_by_one[0].result.payload, one_by_one[2].result.payload]
    assert [r.result.payload for r in worker.run_batch(tasks)] == [r.result.payload for r in one_by_one]


def test_weight_copier_loads_as_load_state_dict_and_falls_back_to_it_otherwise(tmp_path):
    config = with_absolute_paths(config_from_data(tiny_study(tmp_path)))
    model = build_model(config.model, len(config.data.organs))
    copier = worker_module.WeightCopier(model)
    assert copier.tensors is not None  # the U-Net loads plainly
    other = build_model(config.model, len(config.data.organs))
    weights = {k: v.clone() for k, v in other.state_dict().items()}
    parameters = [id(p) for p in model.parameters()]
    copier(weights)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())
    assert [id(p) for p in model.parameters()] == parameters  # copied into, as load_state_dict does
    missing = dict(list(weights.items())[1:])
    try:
        model.load_state_dict(missing)
    except RuntimeError as error:
        expected = str(error)
    with pytest.raises(RuntimeError) as raised:
        copier(missing)  # load_state_dict's own check and message
    assert str(raised.value) == expected
    key = next(iter(weights))
    with pytest.raises(RuntimeError, match="size mismatch"):
        copier({**weights, key: weights[key].flatten()[:1]})  # a shape copy_ would broadcast is refused
    default = ClientHooks(None, None).payload(model)  # FedAvg's payload: the model's state_dict as numpy
    mine = copier.state_arrays()
    assert list(mine) == list(default) and all(
        mine[k].dtype == v.dtype and np.array_equal(mine[k], v) and np.shares_memory(mine[k], v) for k, v in default.items()
    )
    model.register_state_dict_post_hook(lambda module, state, prefix, local_metadata: None)
    assert worker_module.WeightCopier(model).state_arrays() is None  # state_dict's own hooks: hooks.payload
    model.register_load_state_dict_post_hook(lambda module, keys: None)
    assert worker_module.WeightCopier(model).tensors is None  # a module with its own loading: load_state_dict


def test_seed_torch_seeds_the_cpu_generator_as_manual_seed_does():
    torch.manual_seed(123)
    expected = torch.rand(5)
    torch.manual_seed(7)
    worker_module.seed_torch(123, torch.device("cpu"))
    assert torch.equal(torch.rand(5), expected)
