"""One hospital task of the scale workload, in-process, against the bare update: where fedray's own time goes.

    python -m fedray.benchmarks.task_profile [--tasks 60] [--clock wall|cpu] [--work-dir DIR]

Builds a HospitalWorker as a hospital actor does (1 torch thread) on the scale workload's 100 hospitals
(`fedray.benchmarks.scale.workload`, data cached under --work-dir), then alternates one bare update
(`fedray.benchmarks.bare`: same network, loss, optimiser, batch and steps on in-memory tensors) and one
training task (`HospitalWorker.run`, 5 tasks per round as one of 2 actors of a 100x10 round does, then
the round's flush), so both see the same machine load; the figures are medians and their ratio. Each
stage of the task is timed by wrapping the function that does it. `--clock cpu` counts the process's
CPU (all threads) instead of the wall: on a loaded machine it varies far less, but it does not see a
thread waited on. Nothing here goes through Ray: its dispatch is what `fedray bench scale` adds.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

# (owner module or class, attribute, label): the task's stages, in the order they run.
STAGES = (
    ("worker.HospitalWorker", "_global_weights", "global weights fetched and decoded (once per round and actor)"),
    ("worker.HospitalWorker", "_open", "cases opened (memory maps, store version)"),
    ("worker.WeightCopier", "__call__", "global weights copied into the model"),
    ("worker", "task_seed", "task seed"),
    ("worker", "seed_torch", "torch seeded"),
    ("worker", "reset_optimizer", "optimiser emptied"),
    ("patches.Prefetched", "__init__", "prefetch thread started"),
    ("worker", "train_locally", "local loop (batches drawn, steps)"),
    ("patches.Prefetched", "close", "prefetch thread stopped"),
    ("worker", "encoded_size", "update's size"),
    ("worker.RoundLedger", "add", "update folded into the partial sum"),
    ("worker.HospitalWorker", "flush", "partial sum sent (once per round and actor)"),
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=60, help="timed tasks (and as many bare updates)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/fedray_task_profile"))
    args = parser.parse_args(argv)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter

    import torch

    from fedray.benchmarks import bare
    from fedray.benchmarks.scale import workload
    from fedray.data import patches
    from fedray.data.case_store import Recipe, stored_cases
    from fedray.data.datasets import ensure_stored
    from fedray.data.federation import prepare_hospitals
    from fedray.messages import TrainTask, encode_state
    from fedray.simulation import worker as worker_module

    config = workload(100, 10, 5, args.work_dir.resolve(), 2)
    hospitals = prepare_hospitals(config).hospitals
    data = {h.hospital_id: stored_cases(h, config.data) for h in hospitals}
    for refs in data.values():
        for ref in refs:
            ensure_stored(ref, Recipe.of(config.data))

    times: dict[str, list[float]] = defaultdict(list)
    owners = {"worker": worker_module, "patches": patches}
    for owner, attribute, label in STAGES:
        module, _, cls = owner.partition(".")
        target = getattr(owners[module], cls, None) if cls else owners[module]
        if target is not None and hasattr(target, attribute):  # a stage the code in use does not have is left out
            setattr(target, attribute, _timed(getattr(target, attribute), times[label], clock))
    worker = worker_module.HospitalWorker(config, threads=1)
    payload = encode_state({k: v.numpy().copy() for k, v in worker.model.state_dict().items()})

    spec = bare.spec_of(config, len(config.data.organs))
    model, loss = bare.make_network(spec), bare.make_loss(spec)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(0)
    shape = (spec["batch_size"] * spec["local_steps"], 1, *spec["patch_size"])
    batches = bare.hospital_batches(
        rng.standard_normal(shape, dtype=np.float32),
        rng.integers(0, spec["out_channels"], shape).astype(np.int64),
        spec["batch_size"],
    )

    def bare_update() -> float:
        start = clock()
        model.load_state_dict(weights)
        bare.update(model, loss, spec, batches, spec["local_steps"])
        return clock() - start

    def task(index: int) -> float:
        round_index, hospital = 1 + index // 5, hospitals[index % len(hospitals)]
        start = clock()
        worker.run(TrainTask(round_index, hospital, data[hospital.hospital_id], payload))
        seconds = clock() - start
        if index % 5 == 4:
            worker.flush(round_index)
        return seconds

    for index in range(5):  # warm-up: a round of tasks and as many bare updates, not counted
        bare_update(), task(index)
    for stage in times.values():
        stage.clear()
    bare_s, task_s = [], []
    for index in range(5, 5 + args.tasks):
        bare_s.append(bare_update())
        task_s.append(task(index))
    b, t = statistics.median(bare_s), statistics.median(task_s)
    print(f"clock {args.clock}, {args.tasks} tasks, torch threads {torch.get_num_threads()}")
    print(f"| bare update | {b * 1e3:.2f} ms |\n| fedray task | {t * 1e3:.2f} ms |")
    print(f"| task / bare | {t / b:.3f} |\n| task - bare | {(t - b) * 1e3:.2f} ms |")
    for label, stage in times.items():
        if stage:
            print(f"| {label} | {sum(stage) / args.tasks * 1e3:.3f} ms per task (median call {statistics.median(stage) * 1e3:.3f} ms) |")


def _timed(function, into: list[float], clock):
    @functools.wraps(function)
    def timed(*args, **kwargs):
        start = clock()
        try:
            return function(*args, **kwargs)
        finally:
            into.append(clock() - start)

    return timed


if __name__ == "__main__":
    main()
