"""The strategy interface: a client half (hooks into the shared local loop) and a server half (aggregation)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np
import torch
from torch import Tensor, nn

from fedray.config import ServerOptimizerConfig
from fedray.messages import State
from fedray.strategies.aggregate import WeightedSum
from fedray.strategies.server_opt import ServerOptimizer
from fedray.training.losses import masked_sigmoid_loss, naive_softmax_loss


@dataclass(frozen=True)
class Batch:
    """A training batch of one hospital.

    Attributes:
        image: (B, 1, X, Y, Z) float, intensity-normalised CT.
        label: (B, 1, X, Y, Z) integer study label map (0 = background or not labelled here).
        labelled: (B, n_organs) bool, the organs each sample's site annotates.
    """

    image: Tensor
    label: Tensor
    labelled: Tensor

    def to(self, device: torch.device) -> Batch:
        """The same batch on `device`."""
        return Batch(self.image.to(device), self.label.to(device), self.labelled.to(device))


@dataclass(frozen=True)
class ClientContext:
    """What a method's client half knows about the hospital and round it runs for."""

    hospital_id: str
    round: int
    labelled: tuple[bool, ...]
    output: Literal["softmax", "sigmoid"]
    teachers: dict[int, tuple[nn.Module, int]] = field(default_factory=dict)  # organ -> (frozen model, head)
    client_state: dict[str, Tensor] | None = None  # this hospital's persistent state (stateful methods)


class ClientHooks:
    """Client half of a method. The shared local loop calls these; the defaults are plain FedAvg."""

    def __init__(self, params: object, context: ClientContext) -> None:
        self.params = params
        self.context = context

    def on_train_start(self, model: nn.Module, global_state: dict[str, Tensor]) -> None:
        """Called once per round after the global weights are loaded into `model`."""

    def supervised_loss(self, logits: Tensor, batch: Batch) -> Tensor:
        """Loss on this hospital's own labels; the model's output kind decides the form."""
        if self.context.output == "softmax":
            return naive_softmax_loss(logits, batch.label)
        return masked_sigmoid_loss(logits, batch.label, batch.labelled)

    def extra_loss(self, model: nn.Module, batch: Batch, logits: Tensor) -> Tensor | None:
        """Additional loss terms (proximal term, distillation...); None for none."""
        return None

    def payload(self, model: nn.Module) -> State:
        """What the hospital sends back: by default its full weights."""
        return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}

    def client_state(self, model: nn.Module) -> State | None:
        """What this hospital keeps for its next round (stateful methods); None keeps nothing."""
        return None


class Strategy:
    """Server half of a method: how updates are weighted, folded together and applied.

    Subclasses set `client_hooks_class`; aggregation stays pure numpy maths over weight dicts. A
    method's parameters (validated from `method.params`) and the model output it needs are declared
    in strategies/params.py, so that loading a config does not import torch.
    """

    client_hooks_class: ClassVar[type[ClientHooks]] = ClientHooks
    # A weighted sum lets each hospital actor pre-sum its hospitals' updates (hierarchical aggregation);
    # a method whose aggregation is not linear sets this False and gets every update one by one.
    partial_aggregation: ClassVar[bool] = True
    communicates: ClassVar[bool] = True  # False: hospitals never exchange weights (local-only training)
    stateful: ClassVar[bool] = False  # True: hospitals keep state between rounds (see ClientStateStore)

    def __init__(self, params: object, server: ServerOptimizerConfig | None = None) -> None:
        self.params = params
        self.server_optimizer = ServerOptimizer(server or ServerOptimizerConfig())

    def client_hooks(self, context: ClientContext) -> ClientHooks:
        """Build the client half for one hospital and round (runs on the hospital actor)."""
        return self.client_hooks_class(self.params, context)

    def teacher_steps(self) -> int:
        """Local steps of the organ-teacher pre-training stage; 0 when the method uses no teachers."""
        return 0

    def client_weight(self, num_examples: int) -> float:
        """Aggregation weight of one hospital's update."""
        return float(num_examples)

    def new_aggregate(self) -> WeightedSum:
        """An empty streaming accumulator for one round."""
        return WeightedSum()

    def server_update(self, global_state: State, aggregate: WeightedSum) -> State:
        """New global weights from the round's aggregate: the weighted mean, then the server optimiser."""
        return self.server_optimizer.step(global_state, aggregate.mean(global_state))


def state_to_torch(state: State) -> dict[str, Tensor]:
    """numpy weight dict -> torch tensors (copies: arrays from Ray's object store are read-only)."""
    return {k: torch.from_numpy(np.array(v, copy=True)) for k, v in state.items()}
