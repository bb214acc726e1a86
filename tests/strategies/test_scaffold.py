"""SCAFFOLD: the drift correction, option II control variates and the server step, by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from fedray.data.federation import Hospital
from fedray.messages import decode_state, encode_state
from fedray.methods import FedAvgParams, ScaffoldParams
from fedray.simulation.ledger import RoundLedger
from fedray.messages import ClientResult
from fedray.strategies.fedavg import FedAvg
from fedray.strategies.scaffold import CONTROL, Scaffold
from fedray.training.hooks import Batch, ClientContext, ClientHooks
from fedray.training.local import train_locally


class Affine(nn.Module):
    """y = w * x + b elementwise on one channel: two parameters, easy to follow by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0]))
        self.b = nn.Parameter(torch.tensor([0.0]))

    def forward(self, x):
        return self.w * x + self.b


def hospitals(n):
    return [Hospital(f"h{i}", i, ("liver",), (object(),)) for i in range(n)]


def scaffold(n_hospitals=4):
    strategy = Scaffold(ScaffoldParams())
    strategy.setup(("liver",), hospitals(n_hospitals), Affine())
    return strategy


def context(extras, own=None, lr=0.5, steps=2):
    return ClientContext("h0", 1, (True,), "sigmoid", extras, own, lr=lr, local_steps=steps)


def test_local_step_is_corrected_by_c_minus_ci_and_option_two_control_by_hand():
    model = Affine()
    c = {"w": torch.tensor([0.3]), "b": torch.tensor([-0.1])}
    ci = {"w": torch.tensor([0.1]), "b": torch.tensor([0.2])}
    hooks = scaffold().client_hooks(context({"control": c}, ci, lr=0.5, steps=2))
    hooks.on_train_start(model, {})
    model.w.grad, model.b.grad = torch.tensor([1.0]), torch.tensor([2.0])
    hooks.before_step(model)
    assert model.w.grad.item() == pytest.approx(1.0 + 0.3 - 0.1)
    assert model.b.grad.item() == pytest.approx(2.0 - 0.1 - 0.2)
    with torch.no_grad():  # pretend training moved y from x = (1, 0) to (0.6, 0.5)
        model.w.copy_(torch.tensor([0.6]))
        model.b.copy_(torch.tensor([0.5]))
    # c_i+ = c_i - c + (x - y) / (K lr) with K lr = 1
    expected_w, expected_b = 0.1 - 0.3 + (1.0 - 0.6), 0.2 + 0.1 + (0.0 - 0.5)
    state = hooks.client_state(model)
    assert state["w"].item() == pytest.approx(expected_w) and state["b"].item() == pytest.approx(expected_b)
    payload = hooks.payload(model)
    assert payload["w"].item() == pytest.approx(0.6)
    assert payload[CONTROL + "w"].item() == pytest.approx(expected_w - 0.1)  # c_i+ - c_i
    assert payload[CONTROL + "b"].item() == pytest.approx(expected_b - 0.2)


def test_first_round_without_control_is_fedavg_bit_for_bit():
    torch.manual_seed(1)
    batches = itertools.repeat(Batch(torch.randn(1, 1, 4, 4, 4), torch.randint(0, 2, (1, 1, 4, 4, 4)), torch.tensor([[True]])))
    zeros = {"w": torch.zeros(1), "b": torch.zeros(1)}
    results = []
    for hooks in (scaffold().client_hooks(context({"control": zeros})), ClientHooks(None, context({}))):
        model = Affine()
        hooks.on_train_start(model, {})
        train_locally(model, batches, 3, torch.optim.SGD(model.parameters(), lr=0.1), hooks)
        results.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*results))


def test_server_step_by_hand_two_of_four_hospitals():
    strategy = scaffold(n_hospitals=4)
    strategy.control = {"w": np.array([0.2], np.float32), "b": np.array([0.0], np.float32)}
    x = {"w": np.array([1.0], np.float32), "b": np.array([0.0], np.float32)}
    ledger = RoundLedger(strategy, x)
    updates = [
        {"w": [0.8], "b": [0.1], CONTROL + "w": [0.4], CONTROL + "b": [-0.2]},
        {"w": [0.6], "b": [0.3], CONTROL + "w": [0.0], CONTROL + "b": [0.2]},
    ]
    for i, update in enumerate(updates):
        state = {k: np.array(v, np.float32) for k, v in update.items()}
        ledger.add(ClientResult(f"h{i}", 1, encode_state(state), 1, 0.0, 0.0, 0), state)
    new = ledger.new_global_state()
    assert new["w"].item() == pytest.approx(0.7) and new["b"].item() == pytest.approx(0.2)  # mean of y_i
    # c <- c + (|S| / N) mean(delta c) = c + 0.5 * (0.2, 0.0)
    assert strategy.control["w"].item() == pytest.approx(0.3) and strategy.control["b"].item() == pytest.approx(0.0)
    assert set(new) == set(x)  # the control deltas are not weights

    restored = scaffold()
    restored.load_state_dict(strategy.state_dict())
    assert all(np.array_equal(restored.control[k], strategy.control[k]) for k in strategy.control)
    assert decode_state(restored.broadcast(2)["control"])["w"].item() == pytest.approx(0.3)


def test_broadcast_counts_c_and_an_update_without_control_is_rejected():
    strategy = scaffold()
    extras = strategy.broadcast(1)
    assert strategy.broadcast_bytes(extras) == len(extras["control"]) > 0
    x = {"w": np.ones(1, np.float32), "b": np.zeros(1, np.float32)}
    ledger = RoundLedger(strategy, x)
    ledger.add(ClientResult("h0", 1, encode_state(x), 1, 0.0, 0.0, 0), dict(x))  # a FedAvg-shaped update
    assert ledger.rejected == ["h0"]
    assert FedAvg(FedAvgParams()).update_template(x).keys() == x.keys()
