"""Softmax losses for partial labels: marginal, exclusion (Shi et al.) and ConDist (Wang et al.)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch import Tensor

# Batch Dice (sums over batch and voxels), background kept, smooth_nr 0 / smooth_dr 1e-5: the
# settings of ConDistFL's marginal and ConDist losses (methods.md §1.3-1.4).
_batch_dice_loss = DiceLoss(
    include_background=True, batch=True, smooth_nr=0.0, smooth_dr=1e-5, reduction="none"
)


def batch_dice_loss_per_channel(pred: Tensor, target: Tensor) -> Tensor:
    """1 - 2 sum(pred * target) / (sum(pred) + sum(target) + 1e-5), summed over batch and voxels.

    Args:
        pred: (B, C, X, Y, Z) probabilities.
        target: (B, C, X, Y, Z) hard or soft targets.

    Returns:
        (C,) one Dice loss per channel.
    """
    return _batch_dice_loss(pred, target).flatten()


def organ_is_labelled(labelled: Tensor) -> Tensor:
    """(B, n_organs) per-sample label sets -> (B, 1 + n_organs) channel mask, background False."""
    return F.pad(labelled.bool(), (1, 0), value=False)


def marginal_log_probabilities(logits: Tensor, labelled: Tensor) -> Tensor:
    """log p̄: the probabilities of organs the sample's site does not label join the background.

    p̄_0 = p_0 + sum_{u unlabelled} p_u, p̄_c = p_c for labelled organs c, p̄_u = 0 (log -inf).
    The sum is a logsumexp of log-probabilities: the same merge in probability space, but exact
    and finite where p̄_0 is tiny, so no clamp has to cut the gradient there.

    Args:
        logits: (B, 1 + n_organs, X, Y, Z) softmax logits, channel 0 background.
        labelled: (B, n_organs) bool, the organs each sample's site annotates.

    Returns:
        (B, 1 + n_organs, X, Y, Z) merged log-probabilities.
    """
    log_p = F.log_softmax(logits, dim=1)
    own = organ_is_labelled(labelled)[..., None, None, None]  # (B, C, 1, 1, 1)
    log_background = log_p.masked_fill(own, float("-inf")).logsumexp(dim=1, keepdim=True)
    absorbed = ~own
    absorbed[:, 0] = False
    return torch.cat([log_background, log_p[:, 1:]], dim=1).masked_fill(absorbed, float("-inf"))


def marginal_loss(logits: Tensor, label: Tensor, labelled: Tensor) -> Tensor:
    """Marginal Dice + CE (Shi et al., 2021): Dice(p̄, y) + mean_v -log p̄_{y_v}.

    Dice is batch Dice per channel, averaged over background and the organs labelled by at least
    one sample of the batch (a channel nobody labels has no target and no merged probability). The
    CE is the textbook marginal CE, not ConDistFL's CE-on-probabilities quirk (methods.md §1.3).

    Args:
        logits: (B, 1 + n_organs, X, Y, Z) softmax logits.
        label: (B, 1, X, Y, Z) integer study label map; unlabelled organs must already be 0.
        labelled: (B, n_organs) bool, the organs each sample's site annotates.

    Returns:
        Scalar loss.
    """
    merged_log = marginal_log_probabilities(logits, labelled)
    target = label[:, 0].long()
    cross_entropy = F.nll_loss(merged_log, target)
    one_hot = F.one_hot(target, logits.shape[1]).movedim(-1, 1).to(logits.dtype)
    channel_in_use = organ_is_labelled(labelled).any(dim=0)
    channel_in_use[0] = True
    dice = batch_dice_loss_per_channel(merged_log.exp(), one_hot)[channel_in_use].mean()
    return dice + cross_entropy


def exclusion_loss(logits: Tensor, label: Tensor, labelled: Tensor) -> Tensor:
    """Exclusion Dice (Shi et al., 2021), with the exclusion regions of their official code.

    Per sample and channel the region where the class must be absent is: for background, the
    labelled foreground (the complement of the background's ground truth); for an organ the
    sample's site labels, the whole complement of that organ's ground truth; for an organ it does
    not label, the labelled foreground (organs do not overlap). The loss is the batch Dice overlap
    2 sum(p_c R_c) / (sum p_c + sum R_c + 1e-5), averaged over the channels whose region is not
    empty in the batch; minimising it keeps every class out of its region.

    Args:
        logits: (B, 1 + n_organs, X, Y, Z) softmax logits.
        label: (B, 1, X, Y, Z) integer study label map (only labelled organs are non-zero).
        labelled: (B, n_organs) bool, the organs each sample's site annotates.

    Returns:
        Scalar loss (0 with a gradient when no channel has a region).
    """
    probs = F.softmax(logits, dim=1)
    organ_values = torch.arange(1, logits.shape[1], device=label.device).view(1, -1, 1, 1, 1)
    ground_truth = label == organ_values  # (B, n_organs, X, Y, Z), disjoint
    foreground = ground_truth.any(dim=1, keepdim=True)
    own = labelled.bool()[..., None, None, None]  # (B, n_organs, 1, 1, 1)
    organ_region = torch.where(own, ~ground_truth, foreground)
    region = torch.cat([foreground, organ_region], dim=1).to(logits.dtype)
    has_region = region.flatten(2).sum(dim=(0, 2)) > 0
    if not has_region.any():
        return logits.sum() * 0.0
    overlap = 1.0 - batch_dice_loss_per_channel(probs, region)
    return overlap[has_region].mean()


def condist_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    label: Tensor,
    labelled: Tensor,
    temperature: float,
    eps: float = 1e-5,
) -> Tensor:
    """ConDist loss (Wang et al., 2023) as in the ConDistFL code (methods.md §1.4).

    With p = softmax(z / T) for student and teacher, the not-locally-labelled classes (background
    and each unlabelled organ, one group each) get conditional probabilities
    q_c = p_c / (1 - sum_{k labelled} p_k + eps). Voxels are kept (M = 1) only when neither the
    ground truth nor the teacher's argmax (on raw logits) is a locally labelled organ. The loss is
    the masked batch Dice loss 1 - 2 sum(M q^s q^t) / (sum M (q^s + q^t) + 1e-5), averaged over the
    group channels used by at least one sample. A soft Dice with a soft target reaches 0 only when
    the teacher is confident; it is the form the reference code uses.

    Args:
        student_logits: (B, 1 + n_organs, X, Y, Z).
        teacher_logits: (B, 1 + n_organs, X, Y, Z), no gradient needed.
        label: (B, 1, X, Y, Z) integer study label map (0 = background or unlabelled organ).
        labelled: (B, n_organs) bool, the organs each sample's site annotates.
        temperature: T > 0 softening both distributions.
        eps: keeps the conditioning finite where the local foreground takes all the mass.

    Returns:
        Scalar loss.
    """
    own = organ_is_labelled(labelled)
    own_channels = own[..., None, None, None].to(student_logits.dtype)  # (B, C, 1, 1, 1)

    def conditional(logits: Tensor) -> Tensor:
        p = F.softmax(logits / temperature, dim=1)
        local_foreground = (p * own_channels).sum(dim=1, keepdim=True)
        return p * (1.0 - own_channels) / (1.0 - local_foreground + eps)

    teacher_class = teacher_logits.argmax(dim=1, keepdim=True)  # (B, 1, X, Y, Z)
    teacher_says_local = own.gather(1, teacher_class.flatten(1)).view_as(teacher_class)
    keep = (~teacher_says_local & (label == 0)).to(student_logits.dtype)
    group_in_use = (~own).any(dim=0)
    student, teacher = conditional(student_logits) * keep, conditional(teacher_logits) * keep
    return batch_dice_loss_per_channel(student, teacher)[group_in_use].mean()
