"""SCAFFOLD (Karimireddy et al., 2020): local steps corrected by control variates, option II."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from fedray.messages import State, decode_state, encode_state
from fedray.methods import ScaffoldParams
from fedray.strategies.aggregate import WeightedSum
from fedray.strategies.base import Strategy, zeros_like_parameters
from fedray.training.hooks import ClientContext, ClientHooks, ClientRuntime

CONTROL = "control/"  # prefix of the control-variate delta in an update


class ScaffoldHooks(ClientHooks):
    """Client half: every gradient step corrected by (c - c_i); then c_i+ = c_i - c + (x - y_i) / (K lr)."""

    def __init__(self, params: ScaffoldParams, context: ClientContext) -> None:
        super().__init__(params, context)
        self._new_control: dict[str, Tensor] | None = None

    def on_train_start(self, model: nn.Module, global_state: dict[str, Tensor]) -> None:
        """Keep the round-start weights x, the server's c and this hospital's c_i (zeros at first)."""
        self.start = {n: p.detach().clone() for n, p in model.named_parameters()}
        self.server = self.context.extras["control"]
        own = self.context.client_state
        self.own = {n: own[n] if own is not None else torch.zeros_like(p) for n, p in self.start.items()}
        self.correction = {n: self.server[n] - self.own[n] for n in self.start}

    def before_step(self, model: nn.Module) -> None:
        """g <- g + c - c_i (the drift correction of SCAFFOLD's local update)."""
        for name, parameter in model.named_parameters():
            if parameter.grad is not None:
                parameter.grad.add_(self.correction[name])

    def new_control(self, model: nn.Module) -> dict[str, Tensor]:
        """Option II: c_i+ = c_i - c + (x - y_i) / (K lr), with K local steps at rate lr."""
        if self._new_control is None:
            scale = 1.0 / (self.context.local_steps * self.context.lr)
            self._new_control = {
                n: self.own[n] - self.server[n] + (self.start[n] - p.detach()) * scale
                for n, p in model.named_parameters()
            }
        return self._new_control

    def payload(self, model: nn.Module) -> State:
        """The weights y_i and the control delta c_i+ - c_i (both sent)."""
        weights = super().payload(model)
        new = self.new_control(model)
        weights.update({CONTROL + n: (new[n] - self.own[n]).cpu().numpy() for n in new})
        return weights

    def client_state(self, model: nn.Module) -> State:
        """c_i+, kept by the hospital for its next round."""
        return {n: v.cpu().numpy() for n, v in self.new_control(model).items()}


class Scaffold(Strategy):
    """Karimireddy, Kale, Mohri, Reddi, Stich, Suresh, "SCAFFOLD: Stochastic Controlled Averaging for
    Federated Learning", ICML 2020 (Algorithm 1, option II control variates).

    Server: x <- x + eta_g * mean(y_i - x) (the FedOpt server step with `method.server`; none is
    eta_g = 1), c <- c + (|S| / N) * mean(c_i+ - c_i) over the |S| accepted of N hospitals; the mean
    is uniform as in the paper unless `weighted`. c is broadcast each round beside the weights and
    counted as downloaded by every hospital; each delta is counted as uploaded. Control variates
    cover the trainable parameters (buffers are averaged like FedAvg). Option II assumes plain SGD
    steps; with momentum or Adam it is the usual approximation.
    """

    client_hooks_class = ScaffoldHooks

    def __init__(self, params: ScaffoldParams, server=None) -> None:
        super().__init__(params, server)
        self.control: State = {}

    def setup(self, organs, hospitals, model: nn.Module) -> None:
        super().setup(organs, hospitals, model)
        self.control = self.control or zeros_like_parameters(model)

    def client_weight(self, num_examples: int) -> float:
        return float(num_examples) if self.params.weighted else 1.0

    def broadcast(self, round_index: int) -> dict:
        """The server control variate c, encoded (so every hospital's download of it is counted)."""
        return {"control": encode_state(self.control)}

    def open_broadcast(self, extras: dict, runtime: ClientRuntime) -> dict:
        control = decode_state(extras["control"])
        return {"control": {k: torch.from_numpy(np.array(v)).to(runtime.device) for k, v in control.items()}}

    def update_template(self, global_state: State) -> State:
        """The shared weights and a control delta per trainable parameter."""
        return {**self.shared(global_state), **{CONTROL + n: global_state[n] for n in self.parameters}}

    def server_update(self, global_state: State, aggregate: WeightedSum) -> State:
        mean = aggregate.mean({**global_state, **{CONTROL + n: global_state[n] for n in self.parameters}})
        weights = {k: v for k, v in mean.items() if not k.startswith(CONTROL)}
        fraction = aggregate.count / len(self.hospitals)
        self.control = {
            n: (self.control[n].astype(np.float64) + fraction * mean[CONTROL + n].astype(np.float64)).astype(
                self.control[n].dtype
            )
            for n in self.parameters
        }
        shared = {k: global_state[k] for k in weights}
        return {**global_state, **self.server_optimizer.step(shared, weights)}

    def state_dict(self) -> dict[str, bytes]:
        return {**super().state_dict(), "control": encode_state(self.control)}

    def load_state_dict(self, state: dict[str, bytes]) -> None:
        super().load_state_dict(state)
        if "control" in state:
            self.control = decode_state(state["control"])
