"""FedProx (Li et al., 2020): FedAvg plus a proximal term that pulls local weights to the global."""

from __future__ import annotations

from torch import Tensor, nn

from fedray.training.hooks import Batch, ClientContext, ClientHooks
from fedray.strategies.fedavg import FedAvg
from fedray.methods import FedProxParams


class FedProxHooks(ClientHooks):
    """Client half: the method's supervised loss plus the proximal term."""

    def __init__(self, params: FedProxParams, context: ClientContext) -> None:
        super().__init__(params, context)
        self.global_parameters: dict[str, Tensor] = {}

    def on_train_start(self, model: nn.Module, global_state: dict[str, Tensor]) -> None:
        """Keep detached copies of the round-start (global) trainable parameters."""
        self.global_parameters = {
            name: parameter.detach().clone() for name, parameter in model.named_parameters()
        }

    def extra_loss(self, model: nn.Module, batch: Batch, logits: Tensor) -> Tensor | None:
        """(mu / 2) * sum over parameters of ||w - w_global||^2; None when mu is 0."""
        if self.params.mu == 0:
            return None
        squared_distance = sum(
            (parameter - self.global_parameters[name]).pow(2).sum()
            for name, parameter in model.named_parameters()
        )
        return 0.5 * self.params.mu * squared_distance


class FedProx(FedAvg):
    """Li, Sahu, Zaheer, Sanjabi, Talwalkar, Smith, "Federated Optimization in Heterogeneous
    Networks", MLSys 2020. The server is FedAvg's weighted mean.
    """

    client_hooks_class = FedProxHooks
