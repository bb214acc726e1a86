"""The shared local loop's optimiser: one per model reused across tasks, and its state as arrays."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from fedray.training.hooks import Batch, ClientContext, ClientHooks
from fedray.training.local import (
    load_optimizer_state_arrays,
    make_optimizer,
    optimizer_state_arrays,
    reset_optimizer,
    train_locally,
)


def _tasks(name: str, reuse: bool, fused: bool = False) -> dict[str, torch.Tensor]:
    """Three tasks (load the same start weights, train 3 steps) with a fresh or a reset optimiser."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 2, 1))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    generator = torch.Generator().manual_seed(1)
    batch = Batch(
        torch.randn(2, 1, 4, 4, 4, generator=generator),
        torch.randint(0, 2, (2, 1, 4, 4, 4), generator=generator),
        torch.tensor([[True, True], [True, True]]),
    )
    hooks = ClientHooks(None, ClientContext(hospital_id="a", round=1, labelled=(True, True), output="sigmoid"))
    optimizer = make_optimizer(model, name, 0.1, 0.9, 1e-4, fused)
    for task, lr in enumerate((0.1, 0.05, 0.02)):
        model.load_state_dict(start if task == 0 else model.state_dict())
        task_optimizer = reset_optimizer(optimizer, lr) if reuse else make_optimizer(model, name, lr, 0.9, 1e-4, fused)
        train_locally(model, itertools.repeat(batch), 3, task_optimizer, hooks)
    return model.state_dict()


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_a_reset_optimiser_trains_bit_identically_to_a_fresh_one(name):
    fresh, reused = _tasks(name, reuse=False), _tasks(name, reuse=True)
    assert all(torch.equal(fresh[k], reused[k]) for k in fresh)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_fused_kernels_reset_alike_and_equal_the_for_loop_ones_to_rounding(name):
    fused = _tasks(name, reuse=False, fused=True)
    assert make_optimizer(nn.Linear(2, 2), name, 0.1, 0.9, 0.0, fused=True).defaults["fused"] is True
    assert all(torch.equal(fused[k], _tasks(name, reuse=True, fused=True)[k]) for k in fused)
    loop = _tasks(name, reuse=False)  # the same maths, summed in another order: equal to rounding
    assert all(torch.allclose(fused[k], loop[k], rtol=1e-5, atol=1e-6) for k in fused)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_optimizer_state_round_trips_through_arrays(name):
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    optimizer = make_optimizer(model, name, 0.1, 0.9, 0.0)
    model(torch.randn(4, 3)).square().sum().backward()
    optimizer.step()
    arrays = optimizer_state_arrays(model, optimizer)
    assert {key.rsplit(".", 1)[0] for key in arrays} == {"optimizer.weight", "optimizer.bias"}
    restored = make_optimizer(model, name, 0.1, 0.9, 0.0)
    load_optimizer_state_arrays(model, restored, {**arrays, "unrelated": torch.zeros(1)})
    for parameter in model.parameters():
        original, back = optimizer.state[parameter], restored.state[parameter]
        assert original.keys() == back.keys()
        assert all(torch.equal(original[field], back[field]) for field in original)
