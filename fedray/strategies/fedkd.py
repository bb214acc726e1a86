"""FedKD (Kim et al., MedIA 2024): multi-head FedAvg whose local loss distils from the round-start
global model and from pre-trained organ-specific teachers on the organs a hospital does not label."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedray.errors import ConfigError
from fedray.strategies.base import Batch, ClientContext, ClientHooks, Strategy
from fedray.strategies.params import FedKDParams
from fedray.training.losses import masked_sigmoid_loss


def soft_target_bce(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """BCE of student logits against the teacher's soft targets sigmoid(teacher / T), mean over voxels.

    Args:
        student: (B, X, Y, Z) or any shape of logits.
        teacher: logits of the same shape (no gradient).
    """
    return F.binary_cross_entropy_with_logits(student, torch.sigmoid(teacher / temperature))


class FedKDHooks(ClientHooks):
    """Client half: supervised masked Dice + BCE, global-model KD and sampled organ-teacher KD."""

    def __init__(self, params: FedKDParams, context: ClientContext) -> None:
        if context.output != "sigmoid":
            raise ConfigError("fedkd needs a per-organ sigmoid model: set model.name: multihead_unet.")
        super().__init__(params, context)
        self.global_model: nn.Module | None = None

    def on_train_start(self, model: nn.Module, global_state: dict[str, Tensor]) -> None:
        """Freeze a copy of the round-start global model as the 'do not forget' teacher."""
        if self.params.global_kd_weight > 0:
            self.global_model = copy.deepcopy(model).eval().requires_grad_(False)

    def supervised_loss(self, logits: Tensor, batch: Batch) -> Tensor:
        """Dice + bce_weight * BCE on the organs this hospital labels."""
        return masked_sigmoid_loss(logits, batch.label, batch.labelled, self.params.bce_weight)

    def extra_loss(self, model: nn.Module, batch: Batch, logits: Tensor) -> Tensor | None:
        """alpha * global-model KD on unlabelled (not sampled) organs + beta * KD from sampled teachers."""
        p = self.params
        unlabelled = [k for k, own in enumerate(self.context.labelled) if not own]
        sampled: list[int] = []
        if p.teacher_kd_weight > 0 and self.context.teachers and unlabelled:
            candidates = [k for k in unlabelled if k in self.context.teachers]
            order = torch.randperm(len(candidates)).tolist()  # seeded per (seed, round, hospital)
            sampled = [candidates[i] for i in order[: p.teachers_per_step]]
        loss = logits.new_zeros(())
        if sampled:
            teacher_terms = []
            for organ in sampled:
                teacher, head = self.context.teachers[organ]
                with torch.no_grad():
                    target = teacher(batch.image)[:, head]
                teacher_terms.append(soft_target_bce(logits[:, organ], target, p.temperature))
            loss = loss + p.teacher_kd_weight * torch.stack(teacher_terms).mean()
        if self.global_model is not None:
            own = [k for k, is_own in enumerate(self.context.labelled) if is_own]
            distilled = [k for k in unlabelled if k not in sampled]
            if p.global_kd_on_own_organs:
                distilled += own
            if distilled:
                with torch.no_grad():
                    target = self.global_model(batch.image)[:, distilled]
                loss = loss + p.global_kd_weight * soft_target_bce(logits[:, distilled], target, p.temperature)
        return loss


class TeacherHooks(ClientHooks):
    """Supervised loss of a teacher whose heads are only the site's own organs."""

    def __init__(self, own_organs: list[int], context: ClientContext) -> None:
        super().__init__(None, context)
        self.own_organs = torch.tensor(own_organs)

    def supervised_loss(self, logits: Tensor, batch: Batch) -> Tensor:
        """Masked Dice + BCE with the study label map narrowed to this teacher's heads."""
        label = batch.label
        narrowed = torch.zeros_like(label)  # study label values -> this teacher's head numbering
        for head, organ in enumerate(self.own_organs.tolist()):
            narrowed[label == organ + 1] = head + 1
        labelled = torch.ones(label.shape[0], len(self.own_organs), dtype=torch.bool, device=label.device)
        return masked_sigmoid_loss(logits, narrowed, labelled)


class FedKD(Strategy):
    """Kim et al., "Federated learning with knowledge distillation for multi-organ segmentation with
    partially labeled datasets", Medical Image Analysis 95 (2024) 103156.

    Server: the unweighted mean over all parameters (backbone, shared embedding, every head), as in
    the authors' code; `method.server` adds a FedOpt server optimiser like for any method.
    """

    client_hooks_class = FedKDHooks

    def client_weight(self, num_examples: int) -> float:
        """Unweighted mean, as in the authors' FedAvg."""
        return 1.0

    def teacher_steps(self) -> int:
        """Teachers are pre-trained unless teacher KD is switched off."""
        return self.params.teacher_steps if self.params.teacher_kd_weight > 0 else 0
