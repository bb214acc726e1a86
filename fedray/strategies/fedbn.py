"""FedBN (Li et al., 2021): FedAvg whose normalisation layers stay local to each hospital."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import Tensor, nn

from fedray.errors import ConfigError
from fedray.messages import State
from fedray.methods import FedBNParams
from fedray.strategies.base import ClientStates, Strategy
from fedray.training.hooks import ClientContext, ClientHooks

# Layers whose parameters and statistics describe a site's intensities (scanner, protocol).
NORMALISATION = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def normalisation_keys(model: nn.Module) -> set[str]:
    """State-dict keys (parameters and buffers) of the model's normalisation layers."""
    keys = set()
    for prefix, module in model.named_modules():
        if isinstance(module, NORMALISATION):
            keys |= {f"{prefix}.{name}" if prefix else name for name, _ in module.state_dict().items()}
    return keys


class FedBNHooks(ClientHooks):
    """Client half: train with this hospital's own normalisation layers; send everything else."""

    def __init__(self, params: FedBNParams, context: ClientContext, local: frozenset[str]) -> None:
        super().__init__(params, context)
        self.local = local

    def on_train_start(self, model: nn.Module, global_state: dict[str, Tensor]) -> None:
        """Load this hospital's normalisation layers over the broadcast ones, once it has any."""
        if self.context.client_state is not None:
            model.load_state_dict(self.context.client_state, strict=False)

    def payload(self, model: nn.Module) -> State:
        """Every weight but the normalisation layers'."""
        return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items() if k not in self.local}

    def client_state(self, model: nn.Module) -> State:
        """The normalisation layers, kept for the hospital's next round."""
        return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items() if k in self.local}


class FedBN(Strategy):
    """Li, Jiang, Zhang, Kamp, Dou, "FedBN: Federated Learning on Non-IID Features via Local Batch
    Normalization", ICLR 2021.

    The normalisation layers (batch, instance with running statistics, group and layer norm:
    their affine parameters and statistics) never leave a hospital; the rest is FedAvg's weighted
    mean. The test set belongs to no hospital, so the evaluated model takes the case-weighted mean
    of the hospitals' latest local normalisation layers (hospitals that have not trained yet keep
    the initial ones); with a single hospital this is that hospital's model. A network without
    normalisation parameters (MONAI's UNet uses affine-free instance norm) is refused: FedBN would
    be FedAvg.
    """

    def setup(self, organs, hospitals, model: nn.Module) -> None:
        super().setup(organs, hospitals, model)
        if not self.local:
            raise ConfigError(
                "fedbn keeps normalisation layers local, but this model has none with parameters or "
                "statistics; use model.name: multihead_unet (GroupNorm)."
            )

    def local_keys(self, model: nn.Module) -> set[str]:
        return normalisation_keys(model)

    def client_hooks(self, context: ClientContext) -> ClientHooks:
        return FedBNHooks(self.params, context, self.local)

    def client_weight(self, num_examples: int) -> float:
        return float(num_examples) if self.params.weighted else 1.0

    def evaluation_model(self, model: nn.Module, round_index: int, client_states: ClientStates) -> nn.Module:
        """The global model with the case-weighted mean of the hospitals' latest normalisation layers."""
        states, weights = [], []
        for hospital in self.hospitals:
            state = client_states.get(hospital.hospital_id, round_index + 1)
            if state is not None:
                states.append(state)
                weights.append(float(hospital.num_cases) if self.params.weighted else 1.0)
        if not states:
            return model
        total = sum(weights)
        mean = {
            k: torch.from_numpy(
                np.asarray(sum(w * s[k].astype(np.float64) for s, w in zip(states, weights)) / total).astype(
                    states[0][k].dtype
                )
            )
            for k in states[0]
        }
        judged = copy.deepcopy(model)  # the driver's model holds the global weights; leave them be
        judged.load_state_dict(mean, strict=False)
        return judged
