"""Per-organ TP/FP/FN counts, Dice from summed counts, and HD95 in mm; NaN where a score is undefined."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import compute_hausdorff_distance, compute_surface_dice
from torch import Tensor


def confusion_counts(prediction: Tensor, truth: Tensor, n_organs: int) -> np.ndarray:
    """Per-organ (TP, FP, FN) voxel counts of two integer label maps of the same shape.

    Returns:
        int64 array of shape (n_organs, 3); row k is organ label k + 1.
    """
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and truth {tuple(truth.shape)} differ in shape")
    # Not get_confusion_matrix: needs one-hot maps (3-5x slower here), counts in float32 (inexact past 2**24 voxels).
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


def hd95_mm(
    prediction: Tensor, truth: Tensor, n_organs: int, spacing: Sequence[float]
) -> np.ndarray:
    """Per-organ 95th-percentile symmetric Hausdorff distance in mm of two (X, Y, Z) label maps.

    Distances are between the organs' surface voxels (MONAI compute_hausdorff_distance, percentile 95)
    on a grid with voxel sizes `spacing` in mm. NaN where the organ is absent from the truth or from
    the prediction: a distance to nothing is undefined (Dice already scores a missed organ as 0).

    Returns:
        float64 array of shape (n_organs,); entry k is organ label k + 1.
    """
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and truth {tuple(truth.shape)} differ in shape")
    # Not HausdorffDistanceMetric on one-hot maps: same values, 5-10% less CPU, ~10x the memory (+3 GB at 512²x200).
    distances = np.full(n_organs, np.nan)
    for k in range(n_organs):
        pred, true = prediction == k + 1, truth == k + 1
        if pred.any() and true.any():
            with warnings.catch_warnings():  # MONAI 1.6 warns about its own internal call
                warnings.filterwarnings("ignore", ".*always_return_as_numpy", FutureWarning)
                distance = compute_hausdorff_distance(
                    pred[None, None], true[None, None], include_background=True, percentile=95,
                    spacing=[float(s) for s in spacing],
                )
            distances[k] = float(distance)
    return distances


def surface_dice(
    prediction: Tensor, truth: Tensor, n_organs: int, spacing: Sequence[float], tolerance_mm: float
) -> np.ndarray:
    """Per-organ normalised surface Dice (Nikolov et al. 2021; MONAI compute_surface_dice): the share of
    both surfaces lying within `tolerance_mm` of the other. NaN where the organ is in neither map, 0
    where it is in one only.

    Returns:
        float64 array of shape (n_organs,); entry k is organ label k + 1.
    """
    scores = np.full(n_organs, np.nan)
    for k in range(n_organs):
        pred, true = prediction == k + 1, truth == k + 1
        if not (pred.any() or true.any()):
            continue
        if not (pred.any() and true.any()):
            scores[k] = 0.0
            continue
        one_hot = [torch.stack([~m, m])[None] for m in (pred, true)]  # (1, 2, X, Y, Z): background, organ
        with warnings.catch_warnings():  # MONAI 1.6 warns about its own internal call
            warnings.filterwarnings("ignore", ".*always_return_as_numpy", FutureWarning)
            scores[k] = float(compute_surface_dice(
                one_hot[0], one_hot[1], class_thresholds=[tolerance_mm], spacing=[float(s) for s in spacing]
            ))
    return scores
