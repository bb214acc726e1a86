"""ConDistFL (Wang et al., 2023): marginal loss plus distillation from the round-start global model."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from fedray.messages import State
from fedray.training.hooks import Batch, ClientContext, ClientHooks
from fedray.training.local import load_optimizer_state_arrays, optimizer_state_arrays
from fedray.strategies.fedavg import FedAvg
from fedray.strategies.marginal import require_softmax
from fedray.methods import ConDistParams
from fedray.training.partial_losses import condist_loss, marginal_loss


class ConDistHooks(ClientHooks):
    """Client half: marginal Dice + CE, plus lambda_r * ConDist against the round-start model;
    gradient-norm clipping, and the local optimiser's state kept by the hospital across rounds.

    Deep supervision (the reference's marginal loss on 3 extra decoder outputs) is left out:
    fedray's trunks give one full-resolution output, which every method shares.
    """

    def __init__(self, params: ConDistParams, context: ClientContext) -> None:
        require_softmax(context, "condist")
        super().__init__(params, context)
        self.teacher: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None

    def on_train_start(self, model: nn.Module, global_state: dict[str, Tensor]) -> None:
        """Freeze a copy of the global model just loaded into `model` as the teacher."""
        self.teacher = copy.deepcopy(model).eval().requires_grad_(False)

    def prepare_optimizer(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Put back this hospital's optimiser state from its last round, if it has one."""
        self.optimizer = optimizer
        if self.params.keep_optimizer_state and self.context.client_state:
            load_optimizer_state_arrays(model, optimizer, self.context.client_state)

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

    def before_step(self, model: nn.Module) -> None:
        """Clip the gradient's global L2 norm to grad_clip_norm, as the reference does."""
        if self.params.grad_clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.params.grad_clip_norm)

    def client_state(self, model: nn.Module) -> State | None:
        """The local optimiser's state (momentum buffers), kept for this hospital's next round."""
        if not self.params.keep_optimizer_state or self.optimizer is None:
            return None
        return optimizer_state_arrays(model, self.optimizer)


class ConDist(FedAvg):
    """Wang, Shen, Wang, Oda, Fuh, Mori, Roth, "ConDistFL: Conditional Distillation for Federated
    Learning from Partially Annotated Data", DeCaF @ MICCAI 2023 (arXiv 2308.04070).

    Server: the unweighted mean of the hospitals' weights, as in the reference. ConDistFL's FedOpt
    step (server SGD, lr 1.0, momentum 0.6) is the generic `method.server`, which
    configs/methods/condist.yaml sets.
    """

    client_hooks_class = ConDistHooks
