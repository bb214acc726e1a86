"""FedProx: mu = 0 is FedAvg bit for bit; the proximal term and its gradient by hand."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from torch import nn

from fedray.configtypes import build
from fedray.errors import ConfigError
from fedray.training.hooks import Batch, ClientContext, ClientHooks
from fedray.strategies.fedprox import FedProx
from fedray.methods import FedProxParams
from fedray.training.local import train_locally

CONTEXT = ClientContext(hospital_id="a", round=1, labelled=(True, False), output="softmax")


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Conv3d(1, 3, kernel_size=1)


def fixed_batches() -> itertools.repeat:
    torch.manual_seed(1)
    image = torch.randn(2, 1, 4, 4, 4)
    label = torch.randint(0, 2, (2, 1, 4, 4, 4))
    return itertools.repeat(Batch(image, label, torch.tensor([[True, False], [True, False]])))


def train(model: nn.Module, hooks: ClientHooks) -> nn.Module:
    hooks.on_train_start(model, {k: v.clone() for k, v in model.state_dict().items()})
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train_locally(model, fixed_batches(), 3, optimizer, hooks)
    return model


def test_mu_zero_is_fedavg_bit_for_bit():
    fedprox = FedProx(FedProxParams(mu=0.0)).client_hooks(CONTEXT)
    model = tiny_model()
    batch = next(fixed_batches())
    assert fedprox.extra_loss(model, batch, model(batch.image)) is None
    with_prox = train(tiny_model(), fedprox)
    plain = train(tiny_model(), ClientHooks(None, CONTEXT))
    for a, b in zip(with_prox.parameters(), plain.parameters(), strict=True):
        assert torch.equal(a, b)


def test_proximal_term_and_gradient_by_hand():
    mu = 0.2
    hooks = FedProx(FedProxParams(mu=mu)).client_hooks(CONTEXT)
    model = tiny_model()
    hooks.on_train_start(model, model.state_dict())
    batch = next(fixed_batches())
    assert hooks.extra_loss(model, batch, model(batch.image)).item() == 0.0
    with torch.no_grad():
        model.weight += 0.5  # the global copy must not follow: it was detached and cloned
    term = hooks.extra_loss(model, batch, model(batch.image))
    assert torch.isclose(term, torch.tensor(mu / 2 * 0.25 * model.weight.numel()))
    term.backward()
    assert torch.allclose(model.weight.grad, torch.full_like(model.weight, mu * 0.5))
    assert torch.equal(model.bias.grad, torch.zeros_like(model.bias))
    # A descent step on the proximal term moves the weights back towards the global ones.
    before = (model.weight - hooks.global_parameters["weight"]).abs().sum()
    with torch.no_grad():
        model.weight -= model.weight.grad
    assert (model.weight - hooks.global_parameters["weight"]).abs().sum() < before


def test_params_validated_and_fedavg_weighting():
    with pytest.raises(ConfigError, match="mu"):
        build(FedProxParams, {"mu": -0.1})
    assert build(FedProxParams, {}).mu == 0.01
    assert FedProx(FedProxParams(weighted=False)).client_weight(7) == 1.0
    assert FedProx(FedProxParams()).client_weight(7) == 7.0


def test_global_copy_holds_parameters_only():
    model = nn.Sequential(nn.Conv3d(1, 2, 1), nn.BatchNorm3d(2))
    hooks = FedProx(FedProxParams()).client_hooks(CONTEXT)
    hooks.on_train_start(model, copy.deepcopy(model.state_dict()))
    assert set(hooks.global_parameters) == {name for name, _ in model.named_parameters()}
    assert not any(t.requires_grad for t in hooks.global_parameters.values())
