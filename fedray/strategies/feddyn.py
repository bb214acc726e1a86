"""FedDyn (Acar et al., 2021): each hospital's objective is corrected by a dynamic linear and quadratic regulariser."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from fedray.errors import ConfigError
from fedray.messages import State, decode_state, encode_state
from fedray.methods import FedDynParams
from fedray.strategies.aggregate import WeightedSum
from fedray.strategies.base import Strategy, zeros_like_parameters
from fedray.training.hooks import Batch, ClientContext, ClientHooks


class FedDynHooks(ClientHooks):
    """Client half: loss - <g_i, w> + (alpha / 2) ||w - w_global||^2; then g_i <- g_i - alpha (w_i - w_global)."""

    def __init__(self, params: FedDynParams, context: ClientContext) -> None:
        super().__init__(params, context)

    def on_train_start(self, model: nn.Module, global_state: dict[str, Tensor]) -> None:
        """Keep the round-start (global) parameters and this hospital's linear term g_i (zeros at first)."""
        self.start = {n: p.detach().clone() for n, p in model.named_parameters()}
        own = self.context.client_state
        self.linear = {n: own[n] if own is not None else torch.zeros_like(p) for n, p in self.start.items()}

    def extra_loss(self, model: nn.Module, batch: Batch, logits: Tensor) -> Tensor | None:
        """-sum <g_i, w> + (alpha / 2) sum ||w - w_global||^2."""
        alpha = self.params.alpha
        linear = sum((self.linear[n] * p).sum() for n, p in model.named_parameters())
        quadratic = sum((p - self.start[n]).pow(2).sum() for n, p in model.named_parameters())
        return -linear + 0.5 * alpha * quadratic

    def client_state(self, model: nn.Module) -> State:
        """g_i+ = g_i - alpha (w_i - w_global), kept by the hospital for its next round."""
        alpha = self.params.alpha
        return {
            n: (self.linear[n] - alpha * (p.detach() - self.start[n])).cpu().numpy()
            for n, p in model.named_parameters()
        }


class FedDyn(Strategy):
    """Acar, Zhao, Matas, Mattina, Whatmough, Saligrama, "Federated Learning Based on Dynamic
    Regularization", ICLR 2021 (Algorithm 1).

    Server state h (per trainable parameter, zeros at first, checkpointed):
    h <- h - alpha * (1/m) * sum over the round's accepted hospitals of (w_i - w_global), m the number
    of hospitals; new weights = mean(w_i) - h / alpha, the mean uniform as in the paper. Buffers
    take the plain mean. FedDyn's server step is its own, so `method.server` must stay `none`.
    """

    client_hooks_class = FedDynHooks

    def __init__(self, params: FedDynParams, server=None) -> None:
        super().__init__(params, server)
        if self.server_optimizer.cfg.name != "none":
            raise ConfigError("feddyn has its own server step: leave method.server.name: none.")
        self.h: State = {}

    def setup(self, organs, hospitals, model: nn.Module) -> None:
        super().setup(organs, hospitals, model)
        self.h = self.h or zeros_like_parameters(model)

    def client_weight(self, num_examples: int) -> float:
        return 1.0

    def server_update(self, global_state: State, aggregate: WeightedSum) -> State:
        mean = aggregate.mean(global_state)
        fraction, alpha = aggregate.count / len(self.hospitals), self.params.alpha
        new_state = {**global_state, **mean}
        for n in self.parameters:
            drift = mean[n].astype(np.float64) - global_state[n].astype(np.float64)
            h = self.h[n].astype(np.float64) - alpha * fraction * drift
            self.h[n] = h.astype(self.h[n].dtype)
            new_state[n] = (mean[n].astype(np.float64) - h / alpha).astype(global_state[n].dtype)
        return new_state

    def state_dict(self) -> dict[str, bytes]:
        return {**super().state_dict(), "h": encode_state(self.h)}

    def load_state_dict(self, state: dict[str, bytes]) -> None:
        super().load_state_dict(state)
        if "h" in state:
            self.h = decode_state(state["h"])
