"""Evaluate a model on fully-labelled volumes: sliding-window inference, scored on the original grid."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from torch import Tensor, nn

from monai.data.utils import affine_to_spacing

from fedray.config import EvalConfig
from fedray.data.datasets import to_original_space
from fedray.metrics.segmentation import confusion_counts, dice_from_counts, hd95_mm, surface_dice


@dataclass(frozen=True)
class Evaluation:
    """Per-organ scores over the test volumes, and inference time.

    Attributes:
        counts: (n_organs, 3) TP, FP, FN voxel counts summed over volumes (Dice from these).
        seconds_per_volume: mean sliding-window inference time per volume.
        hd95_mm: (n_organs,) HD95 in mm, the mean over the volumes where it is defined (the organ is
            in both the reference and the prediction); NaN where it is defined in none. All NaN when
            not measured (e.g. an Evaluation restored from before HD95 was recorded).
    """

    counts: np.ndarray
    seconds_per_volume: float
    hd95_mm: np.ndarray | None = None
    cases: tuple[dict, ...] = ()  # per test volume and organ: Dice, HD95, NSD and counts (cases.csv)

    def __post_init__(self) -> None:
        if self.hd95_mm is None:
            object.__setattr__(self, "hd95_mm", np.full(len(self.counts), np.nan))


def logits_to_labels(logits: Tensor, output: Literal["softmax", "sigmoid"]) -> Tensor:
    """(B, C, X, Y, Z) logits -> (B, X, Y, Z) study label map.

    softmax: arg-max over background + organs. sigmoid: organs whose probability exceeds 0.5, the most
    probable one where several do; background elsewhere.
    """
    if output == "softmax":
        return logits.argmax(dim=1)
    best = logits.argmax(dim=1) + 1
    return torch.where(logits.max(dim=1).values > 0.0, best, torch.zeros_like(best))


@torch.no_grad()
def predict(model: nn.Module, image: Tensor, output: Literal["softmax", "sigmoid"], cfg: EvalConfig) -> Tensor:
    """Sliding-window prediction of one (1, 1, X, Y, Z) volume -> (X, Y, Z) label map."""
    model.eval()
    logits = sliding_window_inference(
        image, roi_size=cfg.roi_size, sw_batch_size=cfg.sw_batch_size, predictor=model,
        overlap=cfg.overlap, mode=cfg.mode,
    )
    return logits_to_labels(logits, output)[0]


def evaluate(
    model: nn.Module,
    cases: list[dict],
    output: Literal["softmax", "sigmoid"],
    cfg: EvalConfig,
    n_organs: int,
) -> Evaluation:
    """Scores over `cases` (from load_folder: (1, X, Y, Z) image and label) and seconds per volume.

    Each volume is predicted whole on its preprocessed grid, then the label map is mapped back to the
    file's original grid and scored there against the original label (Dice counts, and HD95 with the
    original voxel sizes). The first volume is run once untimed as a warm-up, so every method is timed
    the same way; the timing covers the sliding-window inference only.
    """
    if not cases:
        raise ValueError("no test volumes")
    predict(model, cases[0]["image"][None], output, cfg)  # warm-up: allocator, kernels
    counts = np.zeros((n_organs, 3), dtype=np.int64)
    distances = np.zeros((len(cases), n_organs))
    seconds = 0.0
    rows: list[dict] = []
    for index, case in enumerate(cases):
        start = time.perf_counter()
        labels = predict(model, case["image"][None], output, cfg)
        seconds += time.perf_counter() - start
        labels, truth, spacing = in_original_space(labels, case)
        case_counts = confusion_counts(labels, truth, n_organs)
        counts += case_counts
        distances[index] = hd95_mm(labels, truth, n_organs, spacing)
        nsd = surface_dice(labels, truth, n_organs, spacing, cfg.nsd_tolerance_mm)
        dice = dice_from_counts(case_counts)
        rows += [
            {"case": case.get("case_id", str(index)), "organ": k + 1, "dice": float(dice[k]),
             "hd95_mm": float(distances[index, k]), "nsd": float(nsd[k]),
             "tp": int(case_counts[k, 0]), "fp": int(case_counts[k, 1]), "fn": int(case_counts[k, 2])}
            for k in range(n_organs)
        ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an organ with no defined HD95: NaN is right
        mean_distances = np.nanmean(distances, axis=0)
    return Evaluation(counts=counts, seconds_per_volume=seconds / len(cases), hd95_mm=mean_distances, cases=tuple(rows))


def in_original_space(labels: Tensor, case: dict) -> tuple[Tensor, Tensor, tuple[float, ...]]:
    """(prediction, reference, voxel sizes in mm) on the case's original grid.

    Hand-made cases without geometry are scored on their own grid with 1 mm voxels.
    """
    if "original_affine" not in case:
        return labels, case["label"][0].long(), (1.0,) * labels.ndim
    spacing = affine_to_spacing(case["original_affine"], r=labels.ndim)
    truth = case["original_label"][0].long()
    return to_original_space(labels, case), truth, tuple(float(s) for s in spacing)
