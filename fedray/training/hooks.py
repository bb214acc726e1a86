"""The local loop's hook protocol: the batch it feeds, what a method's client half knows, and its hooks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
from torch import Tensor, nn

from fedray.messages import State


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
    """What a method's client half knows about the hospital and round it runs for.

    Attributes:
        extras: what the method broadcast this round besides the global weights, as its
            `Strategy.open_broadcast` made it usable on the hospital actor (e.g. frozen models).
        client_state: this hospital's persistent state from its last round (None before its first).
        lr: this round's local learning rate; local_steps: the optimiser steps the loop will run.
    """

    hospital_id: str
    round: int
    labelled: tuple[bool, ...]
    output: Literal["softmax", "sigmoid"]
    extras: Mapping[str, Any] = field(default_factory=dict)
    client_state: dict[str, Tensor] | None = None
    lr: float = 0.0
    local_steps: int = 0


class ClientHooks:
    """Client half of a method. The shared local loop calls these; the defaults are plain FedAvg."""

    def __init__(self, params: object, context: ClientContext) -> None:
        self.params = params
        self.context = context

    def on_train_start(self, model: nn.Module, global_state: dict[str, Tensor]) -> None:
        """Called once per round after the global weights are loaded into `model`."""

    def prepare_optimizer(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Called by the loop before its first step, with the task's optimiser (empty state)."""

    def supervised_loss(self, logits: Tensor, batch: Batch) -> Tensor:
        """Loss on this hospital's own labels; the model's output kind decides the form."""
        from fedray.training.losses import masked_sigmoid_loss, naive_softmax_loss

        if self.context.output == "softmax":
            return naive_softmax_loss(logits, batch.label)
        return masked_sigmoid_loss(logits, batch.label, batch.labelled)

    def extra_loss(self, model: nn.Module, batch: Batch, logits: Tensor) -> Tensor | None:
        """Additional loss terms (proximal term, distillation...); None for none."""
        return None

    def before_step(self, model: nn.Module) -> None:
        """Called after backward, before the optimiser step (for gradient corrections)."""

    def payload(self, model: nn.Module) -> State:
        """What the hospital sends back: by default its full weights."""
        return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}

    def client_state(self, model: nn.Module) -> State | None:
        """What this hospital keeps for its next round (stateful methods); None keeps nothing."""
        return None


class ClientRuntime(Protocol):
    """What a hospital actor lends a method's preparation phase and broadcast decoding."""

    device: torch.device
    cache: dict[str, Any]  # per actor, for what a method decodes once (frozen models)

    def build_model(self, n_organs: int) -> nn.Module:
        """The study's network for `n_organs` outputs (heads), on the actor's device."""

    def train_model(self, model: nn.Module, hooks: ClientHooks, data: list[dict], steps: int, seed: int) -> float:
        """`steps` local steps of `model` on `data` with the study's optimiser; the mean loss."""


