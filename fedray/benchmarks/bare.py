"""The bare network update of the scale workload (network, loss, optimiser, steps; no framework), shared by
the benchmark's floor and the peer frameworks, which run it inside their own machinery.

Everything here is plain torch and MONAI on a JSON-able spec, so a peer framework's own interpreter
(which may pin another Ray) can import it without fedray's config, data or simulation code.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch


def spec_of(config, n_organs: int) -> dict:
    """The update's workload as plain data: network, loss, optimiser, batch and steps of a study config."""
    model, train = config.model, config.train
    if model.name != "unet" or model.output != "softmax":
        raise ValueError(f"the bare update covers the benchmark's softmax MONAI U-Net, not {model.name}/{model.output}")
    return {
        "channels": list(model.channels),
        "strides": list(model.strides),
        "num_res_units": model.num_res_units,
        "out_channels": n_organs + 1,
        "patch_size": list(config.data.patch_size),
        "optimizer": train.optimizer,
        "lr": train.lr,
        "momentum": train.momentum,
        "weight_decay": train.weight_decay,
        "batch_size": train.batch_size,
        "local_steps": train.local_steps,
    }


def make_network(spec: dict) -> torch.nn.Module:
    """The benchmark's MONAI U-Net (as fedray's model factory builds it for `name: unet`)."""
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=spec["out_channels"],
        channels=spec["channels"],
        strides=spec["strides"],
        num_res_units=spec["num_res_units"],
    )


def make_loss(spec: dict) -> torch.nn.Module:
    """Dice + cross-entropy over background and organs (fedray's softmax loss)."""
    from monai.losses import DiceCELoss

    return DiceCELoss(to_onehot_y=True, softmax=True)


def make_optimizer(spec: dict, parameters) -> torch.optim.Optimizer:
    """A fresh local optimiser, as each hospital update starts one."""
    if spec["optimizer"] == "sgd":
        return torch.optim.SGD(parameters, lr=spec["lr"], momentum=spec["momentum"], weight_decay=spec["weight_decay"])
    return torch.optim.Adam(parameters, lr=spec["lr"], weight_decay=spec["weight_decay"])


def hospital_batches(images: np.ndarray, labels: np.ndarray, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A hospital's cases as in-memory (image, label) batches, in order: one epoch."""
    return [
        (torch.from_numpy(images[i : i + batch_size]), torch.from_numpy(labels[i : i + batch_size]).long())
        for i in range(0, len(images), batch_size)
    ]


def update(model: torch.nn.Module, loss_fn, spec: dict, batches, steps: int) -> float:
    """One local update from the weights `model` holds: `steps` optimiser steps; the mean loss."""
    optimizer = make_optimizer(spec, model.parameters())
    model.train()
    total = 0.0
    for step in range(steps):
        image, label = batches[step % len(batches)]
        loss = loss_fn(model(image), label)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach())
    return total / steps


def _bare_setup(spec: dict, seed: int) -> tuple:
    """The network, loss, global weights and in-memory batches of one bare update, from `seed`."""
    torch.manual_seed(seed)
    model = make_network(spec)
    loss_fn = make_loss(spec)
    global_weights = {k: v.clone() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(seed)
    shape = (spec["batch_size"] * spec["local_steps"], 1, *spec["patch_size"])
    images = rng.standard_normal(shape, dtype=np.float32)
    labels = rng.integers(0, spec["out_channels"], shape).astype(np.int64)
    return model, loss_fn, global_weights, hospital_batches(images, labels, spec["batch_size"])


def _timed_update(spec: dict, setup: tuple) -> float:
    """Seconds of one bare update: load the global weights, a fresh optimiser, the steps."""
    model, loss_fn, global_weights, batches = setup
    start = time.perf_counter()
    model.load_state_dict(global_weights)
    update(model, loss_fn, spec, batches, spec["local_steps"])
    return time.perf_counter() - start


def bare_update_seconds(spec: dict, repeats: int, seed: int = 0, threads: int = 1) -> list[float]:
    """Seconds of each of `repeats` bare updates (load the global weights, fresh optimiser, the steps),
    on random in-memory batches of the workload's shape, after one untimed warm-up update."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        setup = _bare_setup(spec, seed)
        _timed_update(spec, setup)  # the first pays for lazy initialisation (allocator, kernels)
        return [_timed_update(spec, setup) for _ in range(repeats)]
    finally:
        torch.set_num_threads(before)


def concurrent_bare_update_seconds(
    spec: dict, repeats: int, processes: int, seed: int = 0, timeout_s: float = 600.0
) -> list[list[float]]:
    """Seconds of `repeats` bare updates in each of `processes` processes running at once (1 thread each).

    What a federation of `processes` one-thread hospital slots cannot beat on this machine: the
    updates then share the cores' caches and memory bandwidth, which one process alone does not.
    Each process imports torch and MONAI, builds the network and warms up, then waits until all are
    ready, so the timed updates overlap; a process that has its `repeats` keeps updating (untimed)
    until every process has its own. Returns each process's timings.
    """
    import subprocess
    import sys
    import tempfile

    if repeats < 1 or processes < 1:
        raise ValueError(f"repeats and processes must be >= 1, got {repeats} and {processes}")
    with tempfile.TemporaryDirectory(prefix="fedray-bare-") as tmp:
        folder = Path(tmp)
        write_spec(spec, folder / "spec.json")
        code = "import sys; from fedray.benchmarks.bare import _concurrent_worker as w; w(*sys.argv[1:])"
        checkout = str(Path(__file__).resolve().parents[2])  # the folder holding this fedray package
        path = os.pathsep.join(filter(None, [checkout, os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        logs = [open(folder / f"stderr-{index}", "w") for index in range(processes)]  # noqa: SIM115 - closed below
        children = [
            subprocess.Popen(
                [sys.executable, "-c", code, str(folder), str(repeats), str(index), str(seed + index)],
                stdout=subprocess.DEVNULL, stderr=log, env=env,
            )
            for index, log in enumerate(logs)
        ]
        try:
            deadline = time.monotonic() + timeout_s

            def wait_for(name: str) -> None:
                while not all((folder / f"{name}-{i}").exists() for i in range(processes)):
                    for i, child in enumerate(children):
                        if child.poll() is not None and child.returncode != 0:
                            error = (folder / f"stderr-{i}").read_text()[-3000:]
                            raise RuntimeError(f"a bare-update process failed ({child.returncode}):\n{error}")
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"the concurrent bare updates took over {timeout_s:g} s")
                    time.sleep(0.01)

            wait_for("ready")
            (folder / "go").touch()
            wait_for("times")
            (folder / "stop").touch()
            for child in children:
                child.wait(timeout=max(1.0, deadline - time.monotonic()))
            return [json.loads((folder / f"times-{i}").read_text()) for i in range(processes)]
        finally:
            for child in children:
                if child.poll() is None:
                    child.kill()
                    child.wait()
            for log in logs:
                log.close()


def _concurrent_worker(folder: str, repeats: str, index: str, seed: str) -> None:
    """One process of `concurrent_bare_update_seconds`: warm up, say ready, time on `go`, update until `stop`."""
    root = Path(folder)
    spec = json.loads((root / "spec.json").read_text())
    torch.set_num_threads(1)
    setup = _bare_setup(spec, int(seed))
    _timed_update(spec, setup)  # warm-up
    (root / f"ready-{index}").touch()
    while not (root / "go").exists():
        time.sleep(0.002)
    times: list[float] = []
    while not (root / "stop").exists():
        seconds = _timed_update(spec, setup)
        if len(times) < int(repeats):
            times.append(seconds)
            if len(times) == int(repeats):  # written whole, then renamed: the parent never reads half a file
                partial = root / f"partial-{index}"
                partial.write_text(json.dumps(times))
                partial.rename(root / f"times-{index}")


def round_floor_s(clients: int, slots: int, update_s: float) -> float:
    """The least a round of `clients` bare updates of `update_s` each can take on `slots` one-thread slots."""
    return math.ceil(clients / slots) * update_s


def bare_floor(spec: dict, repeats: int) -> dict:
    """The bare update's median seconds and spread over `repeats` timed updates (1 thread)."""
    times = bare_update_seconds(spec, repeats)
    return {
        "bare_update_s_median": statistics.median(times),
        "bare_update_s_min": min(times),
        "bare_update_s_max": max(times),
        "bare_update_repeats": len(times),
        "bare_update_threads": 1,
    }


def concurrent_bare_floor(spec: dict, repeats: int, processes: int) -> dict:
    """The bare update timed in `processes` processes at once (`concurrent_bare_update_seconds`): each
    process's median, and their harmonic mean (the per-slot time of their combined rate), the update
    time of the concurrent floor."""
    times = concurrent_bare_update_seconds(spec, repeats, processes)
    medians = [statistics.median(t) for t in times]
    return {
        "bare_concurrent_update_s": statistics.harmonic_mean(medians),
        "bare_concurrent_s_medians": medians,
        "bare_concurrent_s": times,
        "bare_concurrent_processes": processes,
        "bare_concurrent_threads": 1,
    }


def write_spec(spec: dict, path: Path) -> Path:
    """The spec as JSON for a peer's interpreter."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec, indent=2) + "\n")
    return path
