"""The bare network update of the scale workload (network, loss, optimiser, steps; no framework), shared by
the benchmark's floor and the peer frameworks, which run it inside their own machinery.

Everything here is plain torch and MONAI on a JSON-able spec, so a peer framework's own interpreter
(which may pin another Ray) can import it without fedray's config, data or simulation code.
"""

from __future__ import annotations

import json
import math
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


def bare_update_seconds(spec: dict, repeats: int, seed: int = 0, threads: int = 1) -> list[float]:
    """Seconds of each of `repeats` bare updates (load the global weights, fresh optimiser, the steps),
    on random in-memory batches of the workload's shape, after one untimed warm-up update."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        model = make_network(spec)
        loss_fn = make_loss(spec)
        global_weights = {k: v.clone() for k, v in model.state_dict().items()}
        rng = np.random.default_rng(seed)
        shape = (spec["batch_size"] * spec["local_steps"], 1, *spec["patch_size"])
        images = rng.standard_normal(shape, dtype=np.float32)
        labels = rng.integers(0, spec["out_channels"], shape).astype(np.int64)
        batches = hospital_batches(images, labels, spec["batch_size"])
        times = []
        for attempt in range(repeats + 1):
            start = time.perf_counter()
            model.load_state_dict(global_weights)
            update(model, loss_fn, spec, batches, spec["local_steps"])
            if attempt:  # the first pays for lazy initialisation (allocator, kernels)
                times.append(time.perf_counter() - start)
        return times
    finally:
        torch.set_num_threads(before)


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


def write_spec(spec: dict, path: Path) -> Path:
    """The spec as JSON for a peer's interpreter."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec, indent=2) + "\n")
    return path
