"""FedBN: which weights stay local, what is sent, and the normalisation the test set is scored with."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fedray.config import ModelConfig
from fedray.data.federation import Hospital
from fedray.errors import ConfigError
from fedray.messages import encode_state
from fedray.methods import FedBNParams
from fedray.models.factory import build_model
from fedray.strategies.fedbn import FedBN, normalisation_keys
from fedray.training.hooks import ClientContext


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(1, 4, 1), nn.GroupNorm(2, 4), nn.Conv3d(4, 2, 1), nn.BatchNorm3d(2))


class States:
    def __init__(self, states):
        self.states = states

    def get(self, hospital_id, before_round):
        return self.states.get(hospital_id)


def fedbn(hospitals=()):
    strategy = FedBN(FedBNParams())
    strategy.setup(("liver",), hospitals, net())
    return strategy


def test_normalisation_layers_are_local_and_never_sent():
    model = net()
    assert normalisation_keys(model) == {
        "1.weight", "1.bias", "3.weight", "3.bias", "3.running_mean", "3.running_var", "3.num_batches_tracked"
    }
    strategy = fedbn()
    global_state = {k: v.numpy() for k, v in model.state_dict().items()}
    assert set(strategy.update_template(global_state)) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert 0 < strategy.download_bytes(global_state) < len(encode_state(global_state))  # norms are not sent
    own = {"1.weight": torch.full((4,), 2.0), "1.bias": torch.full((4,), -1.0)}
    hooks = strategy.client_hooks(ClientContext("a", 2, (True,), "sigmoid", client_state=own))
    hooks.on_train_start(model, {})
    assert torch.equal(model[1].weight, own["1.weight"])  # trains with its own normalisation
    assert set(hooks.payload(model)) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert set(hooks.client_state(model)) == normalisation_keys(model)


def test_evaluated_model_takes_the_case_weighted_mean_of_the_local_normalisation():
    hospitals = [Hospital("a", 0, ("liver",), (object(),)), Hospital("b", 1, ("liver",), (object(),) * 3)]
    strategy = fedbn(hospitals)
    model = net()
    local = {k: v.numpy() for k, v in model.state_dict().items() if k in strategy.local}
    states = States({"a": {**local, "1.weight": np.full(4, 1.0, np.float32)},
                     "b": {**local, "1.weight": np.full(4, 5.0, np.float32)}})
    judged = strategy.evaluation_model(model, 3, states)
    assert torch.allclose(judged[1].weight, torch.full((4,), (1 * 1.0 + 3 * 5.0) / 4))
    assert torch.equal(judged[0].weight, net()[0].weight)  # shared layers are the global model's


def test_fedbn_refuses_a_model_without_normalisation_parameters():
    unet = build_model(ModelConfig(channels=(4, 8), strides=(2,), num_res_units=0), 2)  # affine-free instance norm
    with pytest.raises(ConfigError, match="multihead_unet"):
        FedBN(FedBNParams()).setup(("liver", "spleen"), (), unet)
