"""Marginal loss (Shi et al., 2021) on a softmax model, optionally with the exclusion loss."""

from __future__ import annotations

from torch import Tensor

from fedray.errors import ConfigError
from fedray.training.hooks import Batch, ClientContext, ClientHooks
from fedray.strategies.fedavg import FedAvg
from fedray.methods import MarginalParams
from fedray.training.partial_losses import exclusion_loss, marginal_loss


def require_softmax(context: ClientContext, method: str) -> None:
    """Partial-label softmax losses merge classes, which needs one softmax over all organs.

    Raises:
        ConfigError: the model is a per-organ sigmoid model.
    """
    if context.output != "softmax":
        raise ConfigError(f"{method} needs model.output: softmax (one softmax over all organs).")


class MarginalHooks(ClientHooks):
    """Client half: marginal Dice + CE, plus the weighted exclusion Dice when enabled."""

    def __init__(self, params: MarginalParams, context: ClientContext) -> None:
        require_softmax(context, "marginal")
        super().__init__(params, context)

    def supervised_loss(self, logits: Tensor, batch: Batch) -> Tensor:
        """Marginal loss on the merged distribution, + exclusion_weight * exclusion loss."""
        loss = marginal_loss(logits, batch.label, batch.labelled)
        if self.params.exclusion:
            loss = loss + self.params.exclusion_weight * exclusion_loss(
                logits, batch.label, batch.labelled
            )
        return loss


class Marginal(FedAvg):
    """Shi, Xiao, Chen, Zhou, "Marginal loss and exclusion loss for partially supervised multi-organ
    segmentation", Medical Image Analysis 70 (2021) 101979, trained federatedly with FedAvg.
    """

    client_hooks_class = MarginalHooks
