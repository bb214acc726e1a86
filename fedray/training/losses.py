"""Supervised losses for partially labelled batches: naive softmax and masked per-organ sigmoid."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss, DiceLoss
from torch import Tensor

_softmax_dice_ce = DiceCELoss(to_onehot_y=True, softmax=True)
_sigmoid_dice = DiceLoss(sigmoid=True, smooth_nr=1.0, smooth_dr=1.0, batch=False, reduction="none")


def naive_softmax_loss(logits: Tensor, label: Tensor) -> Tensor:
    """Dice + CE over background and every organ; organs a site does not label count as background.

    Args:
        logits: (B, 1 + n_organs, X, Y, Z).
        label: (B, 1, X, Y, Z) integer study label map (0 = background or unlabelled).
    """
    return _softmax_dice_ce(logits, label)


def organ_targets(label: Tensor, n_organs: int) -> Tensor:
    """(B, 1, X, Y, Z) label map -> (B, n_organs, X, Y, Z) binary float targets (organ k = value k+1)."""
    values = torch.arange(1, n_organs + 1, device=label.device).view(1, -1, 1, 1, 1)
    return (label == values).float()


def masked_sigmoid_loss(logits: Tensor, label: Tensor, labelled: Tensor, bce_weight: float = 1.0) -> Tensor:
    """Dice + BCE on the (sample, organ) pairs that are labelled; unlabelled organs get no supervision.

    Dice is per sample and channel with +1 smoothing (as in Kim et al.'s code); both terms are
    averaged over the labelled pairs only.

    Args:
        logits: (B, n_organs, X, Y, Z) per-organ logits (independent sigmoids).
        label: (B, 1, X, Y, Z) integer study label map.
        labelled: (B, n_organs) bool, which organs each sample's site annotates.
        bce_weight: weight of the BCE term.
    """
    mask = labelled.to(logits.dtype)
    pairs = mask.sum()
    if pairs == 0:
        return logits.sum() * 0.0
    target = organ_targets(label, logits.shape[1])
    dice = _sigmoid_dice(logits, target).flatten(2).mean(-1)  # (B, C)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(2).mean(-1)
    return ((dice + bce_weight * bce) * mask).sum() / pairs
