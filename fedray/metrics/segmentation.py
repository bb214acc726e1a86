"""Per-organ TP/FP/FN counts and Dice from summed counts (NaN where an organ is absent from both)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def confusion_counts(prediction: Tensor, truth: Tensor, n_organs: int) -> np.ndarray:
    """Per-organ (TP, FP, FN) voxel counts of two integer label maps of the same shape.

    Returns:
        int64 array of shape (n_organs, 3); row k is organ label k + 1.
    """
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and truth {tuple(truth.shape)} differ in shape")
    counts = np.zeros((n_organs, 3), dtype=np.int64)
    for k in range(n_organs):
        pred, true = prediction == k + 1, truth == k + 1
        counts[k] = (
            int(torch.count_nonzero(pred & true)),
            int(torch.count_nonzero(pred & ~true)),
            int(torch.count_nonzero(~pred & true)),
        )
    return counts


def dice_from_counts(counts: np.ndarray) -> np.ndarray:
    """Dice = 2TP / (2TP + FP + FN) per row; NaN where the organ is in neither prediction nor truth."""
    counts = np.asarray(counts, dtype=np.float64)
    tp, fp, fn = counts[..., 0], counts[..., 1], counts[..., 2]
    denominator = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, 2 * tp / denominator, np.nan)


def mean_dice(dice: np.ndarray) -> float:
    """Mean over organs, ignoring NaN (absent) organs; NaN when every organ is absent."""
    dice = np.asarray(dice, dtype=np.float64)
    return float(np.nanmean(dice)) if np.isfinite(dice).any() else float("nan")
