"""FedDyn: the dynamic regulariser, the linear term's update and the server state, by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedray.config import ServerOptimizerConfig
from fedray.data.federation import Hospital
from fedray.errors import ConfigError
from fedray.messages import ClientResult, encode_state
from fedray.methods import FedDynParams
from fedray.simulation.ledger import RoundLedger
from fedray.strategies.feddyn import FedDyn
from fedray.training.hooks import Batch, ClientContext
from tests.strategies.test_scaffold import Affine


def feddyn(alpha=0.1, n_hospitals=4):
    strategy = FedDyn(FedDynParams(alpha=alpha))
    strategy.setup(("liver",), [Hospital(f"h{i}", i, ("liver",), (object(),)) for i in range(n_hospitals)], Affine())
    return strategy


def test_regulariser_value_gradient_and_linear_term_by_hand():
    alpha = 0.1
    model = Affine()  # the global model: w = 1, b = 0
    own = {"w": torch.tensor([0.5]), "b": torch.tensor([-1.0])}  # g_i from the hospital's last round
    hooks = feddyn(alpha).client_hooks(ClientContext("h0", 2, (True,), "sigmoid", client_state=own))
    hooks.on_train_start(model, {})
    with torch.no_grad():  # local training moved the weights to w = 3, b = 2
        model.w.copy_(torch.tensor([3.0]))
        model.b.copy_(torch.tensor([2.0]))
    batch = Batch(torch.zeros(1, 1, 1, 1, 1), torch.zeros(1, 1, 1, 1, 1, dtype=torch.long), torch.tensor([[True]]))
    term = hooks.extra_loss(model, batch, model(batch.image))
    # -(0.5 * 3 + -1 * 2) + 0.05 * ((3 - 1)^2 + (2 - 0)^2)
    assert term.item() == pytest.approx(-(1.5 - 2.0) + 0.05 * 8)
    term.backward()
    assert model.w.grad.item() == pytest.approx(-0.5 + alpha * 2)  # -g_i + alpha (w - w_global)
    assert model.b.grad.item() == pytest.approx(1.0 + alpha * 2)
    state = hooks.client_state(model)  # g_i+ = g_i - alpha (w_i - w_global)
    assert state["w"].item() == pytest.approx(0.5 - alpha * 2) and state["b"].item() == pytest.approx(-1.0 - alpha * 2)


def test_server_state_and_step_by_hand_two_of_four_hospitals():
    alpha = 0.1
    strategy = feddyn(alpha, n_hospitals=4)
    strategy.h = {"w": np.array([0.02], np.float32), "b": np.array([0.0], np.float32)}
    global_state = {"w": np.array([1.0], np.float32), "b": np.array([0.0], np.float32)}
    ledger = RoundLedger(strategy, global_state)
    for i, (w, b) in enumerate([(1.4, 0.2), (1.0, 0.6)]):
        state = {"w": np.array([w], np.float32), "b": np.array([b], np.float32)}
        ledger.add(ClientResult(f"h{i}", 1, encode_state(state), 5 + i, 0.0, 0.0, 0), state)
    new = ledger.new_global_state()
    # mean (uniform) = (1.2, 0.4); h = h - alpha * (2/4) * (mean - global) = (0.02 - 0.01, -0.02)
    assert strategy.h["w"].item() == pytest.approx(0.01) and strategy.h["b"].item() == pytest.approx(-0.02)
    # new = mean - h / alpha
    assert new["w"].item() == pytest.approx(1.2 - 0.1) and new["b"].item() == pytest.approx(0.4 + 0.2)
    restored = feddyn(alpha)
    restored.load_state_dict(strategy.state_dict())
    assert all(np.array_equal(restored.h[k], strategy.h[k]) for k in strategy.h)


def test_feddyn_refuses_a_server_optimiser_and_a_bad_alpha():
    with pytest.raises(ConfigError, match="server"):
        FedDyn(FedDynParams(), ServerOptimizerConfig(name="sgd"))
    from fedray.configtypes import build

    with pytest.raises(ConfigError, match="alpha"):
        build(FedDynParams, {"alpha": 0})
