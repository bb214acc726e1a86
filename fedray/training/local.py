"""The one local training loop that every method shares; methods plug in through ClientHooks."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from fedray.training.hooks import Batch, ClientHooks


@dataclass(frozen=True)
class LocalTrainingResult:
    """What one hospital's local update measured."""

    steps: int
    mean_loss: float
    seconds: float


def make_optimizer(model: nn.Module, name: str, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    """A fresh optimiser per round, as in the paper's code (no optimiser state crosses rounds)."""
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)


def train_locally(
    model: nn.Module,
    batches: Iterator[Batch],
    steps: int,
    optimizer: torch.optim.Optimizer,
    hooks: ClientHooks,
    device: torch.device | str = "cpu",
    on_step: Callable[[int], None] | None = None,
) -> LocalTrainingResult:
    """Run `steps` optimiser steps; the loss is the hooks' supervised loss plus their extra terms.

    `on_step(done)` is called after each step (progress display; it must not touch the model).
    """
    start = time.perf_counter()
    model.train()
    total = 0.0
    for done in range(steps):
        batch = next(batches).to(device)
        logits = model(batch.image)
        loss = hooks.supervised_loss(logits, batch)
        extra = hooks.extra_loss(model, batch, logits)
        if extra is not None:
            loss = loss + extra
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        hooks.before_step(model)
        optimizer.step()
        total += float(loss.detach())
        if on_step is not None:
            on_step(done + 1)
    return LocalTrainingResult(steps=steps, mean_loss=total / steps, seconds=time.perf_counter() - start)
