"""ConDistFL (Wang et al., 2023): marginal loss plus distillation from the round-start global model."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fedray.configtypes import require
from fedray.strategies.base import Batch, ClientContext, ClientHooks
from fedray.strategies.fedavg import FedAvg
from fedray.strategies.marginal import require_softmax
from fedray.training.partial_losses import condist_loss, marginal_loss


@dataclass(frozen=True)
class ConDistParams:
    """ConDistFL parameters; defaults follow the NVFlare code (methods.md §1.4, §1.6).

    Attributes:
        temperature: T softening teacher and student before conditioning (2).
        weight_range: ConDist weight at the first and at the last ramp round (0.01, 1.0); equal
            values give a constant weight.
        ramp_rounds: rounds R of the linear ramp (120, the reference's round count); the weight
            stays at weight_range[1] afterwards. Set it to the study's rounds to ramp over them.
        weighted: weight hospitals by training cases; the reference gives every client weight 1.
    """

    temperature: float = 2.0
    weight_range: tuple[float, float] = (0.01, 1.0)
    ramp_rounds: int = 120
    weighted: bool = False

    def __post_init__(self) -> None:
        require(self.temperature > 0, "method.params.temperature must be > 0.")
        require(min(self.weight_range) >= 0, "method.params.weight_range values must be >= 0.")
        require(self.ramp_rounds >= 2, "method.params.ramp_rounds must be >= 2.")

    def weight(self, round_index: int) -> float:
        """lambda_r = w0 + r (w1 - w0) / (R - 1), r = round_index - 1 (rounds count from 1)."""
        start, end = self.weight_range
        progress = min(max(round_index - 1, 0) / (self.ramp_rounds - 1), 1.0)
        return start + (end - start) * progress


class ConDistHooks(ClientHooks):
    """Client half: marginal Dice + CE, plus lambda_r * ConDist against the round-start model."""

    def __init__(self, params: ConDistParams, context: ClientContext) -> None:
        require_softmax(context, "condist")
        super().__init__(params, context)
        self.teacher: nn.Module | None = None

    def on_train_start(self, model: nn.Module, global_state: dict[str, Tensor]) -> None:
        """Freeze a copy of the global model just loaded into `model` as the teacher."""
        self.teacher = copy.deepcopy(model).eval().requires_grad_(False)

    def supervised_loss(self, logits: Tensor, batch: Batch) -> Tensor:
        """Marginal Dice + CE (ConDistFL's supervised term, without deep supervision)."""
        return marginal_loss(logits, batch.label, batch.labelled)

    def extra_loss(self, model: nn.Module, batch: Batch, logits: Tensor) -> Tensor | None:
        """lambda_r * ConDist(student, teacher) on voxels outside the local foreground."""
        with torch.no_grad():
            teacher_logits = self.teacher(batch.image)
        distillation = condist_loss(
            logits, teacher_logits, batch.label, batch.labelled, self.params.temperature
        )
        return self.params.weight(self.context.round) * distillation


class ConDist(FedAvg):
    """Wang, Shen, Wang, Oda, Fuh, Mori, Roth, "ConDistFL: Conditional Distillation for Federated
    Learning from Partially Annotated Data", DeCaF @ MICCAI 2023 (arXiv 2308.04070).

    Server: the unweighted mean of the hospitals' weights, as in the reference. ConDistFL's FedOpt
    step (server SGD, lr 1.0, momentum 0.6) is the generic `method.server`, which
    configs/methods/condist.yaml sets.
    """

    Params = ConDistParams
    required_output = "softmax"
    client_hooks_class = ConDistHooks
