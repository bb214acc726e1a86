"""Evaluate a model on fully-labelled volumes: sliding-window inference, scored on the original grid."""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from monai.data.utils import affine_to_spacing
from monai.inferers import sliding_window_inference
from torch import Tensor, nn

from fedray.config import EvalConfig
from fedray.data.datasets import to_original_space
from fedray.metrics.segmentation import (
    confusion_counts,
    dice_from_counts,
    image_diagonal_mm,
    penalised_hd95,
    surface_scores,
)

# An organ is predicted where its probability exceeds this, whatever the output (see logits_to_labels).
ORGAN_THRESHOLD = 0.5


@dataclass(frozen=True)
class CaseScore:
    """One test volume's scores, on its original grid (what an evaluation task returns to the driver).

    Attributes:
        case: the case's id.
        counts: (n_organs, 3) TP, FP, FN voxel counts.
        hd95_mm: (n_organs,) scored HD95 in mm: the missed-organ penalty where the organ is in the
            reference but not predicted, NaN where it is not in the reference.
        missed: (n_organs,) bool, in the reference but not predicted.
        nsd: (n_organs,) normalised surface Dice (NaN where in neither map).
        seconds: sliding-window inference time of the volume.
    """

    case: str
    counts: np.ndarray
    hd95_mm: np.ndarray
    missed: np.ndarray
    nsd: np.ndarray
    seconds: float

    def rows(self) -> list[dict]:
        """Per organ: Dice, HD95, NSD and counts (cases.csv; organ is the study label, 1-based)."""
        dice = dice_from_counts(self.counts)
        return [
            {"case": self.case, "organ": k + 1, "dice": float(dice[k]), "hd95_mm": float(self.hd95_mm[k]),
             "hd95_missed": int(self.missed[k]), "nsd": float(self.nsd[k]),
             "tp": int(self.counts[k, 0]), "fp": int(self.counts[k, 1]), "fn": int(self.counts[k, 2])}
            for k in range(len(self.counts))
        ]


@dataclass(frozen=True)
class Evaluation:
    """Per-organ scores over the test volumes, and inference time.

    Attributes:
        counts: (n_organs, 3) TP, FP, FN voxel counts summed over volumes (pooled Dice from these).
        seconds_per_volume: mean sliding-window inference time per volume.
        hd95_mm: (n_organs,) HD95 in mm, the mean over the volumes whose reference holds the organ, a
            miss scored as the penalty (see `penalised_hd95`); NaN where no reference holds it. All NaN
            when not measured (e.g. an Evaluation restored from before HD95 was recorded).
        cases: per test volume and organ: Dice, HD95, NSD and counts (cases.csv).
        dice_per_volume: (n_organs,) the mean over volumes of each volume's Dice, skipping volumes
            where the organ is in neither map (NaN); NaN when not measured.
        hd95_missed: (n_organs,) volumes whose reference holds the organ and whose prediction does not.
    """

    counts: np.ndarray
    seconds_per_volume: float
    hd95_mm: np.ndarray | None = None
    cases: tuple[dict, ...] = ()
    dice_per_volume: np.ndarray | None = None
    hd95_missed: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.counts)
        if self.hd95_mm is None:
            object.__setattr__(self, "hd95_mm", np.full(n, np.nan))
        if self.dice_per_volume is None:
            object.__setattr__(self, "dice_per_volume", np.full(n, np.nan))
        if self.hd95_missed is None:
            object.__setattr__(self, "hd95_missed", np.zeros(n, dtype=np.int64))


def logits_to_labels(logits: Tensor, output: Literal["softmax", "sigmoid"]) -> Tensor:
    """(B, C, X, Y, Z) logits -> (B, X, Y, Z) study label map, by one rule for both outputs: a voxel is
    the most probable organ where that organ's probability exceeds ORGAN_THRESHOLD, background elsewhere.

    The organ's probability is its sigmoid (one head per organ) or its softmax share over background +
    organs; as the paper's code (sigmoid > 0.5, overlaps to the most probable organ). Under softmax at
    most one organ can exceed 0.5, so a softmax organ no longer wins the arg-max at p ~ 1/C.
    """
    if output == "softmax":
        organs = logits[:, 1:]
        best = organs.argmax(dim=1, keepdim=True)
        probability = logits.softmax(dim=1)[:, 1:].gather(1, best)[:, 0]
        return torch.where(probability > ORGAN_THRESHOLD, best[:, 0] + 1, torch.zeros_like(best[:, 0]))
    best = logits.argmax(dim=1) + 1  # sigmoid(z) > 0.5 exactly when z > 0; logits keep ties apart
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


@torch.no_grad()
def warm_up(model: nn.Module, cfg: EvalConfig, device: torch.device | str = "cpu") -> None:
    """One window through the model (allocator, kernel selection), so timing starts warm for every method."""
    model.eval()
    model(torch.zeros(1, 1, *cfg.roi_size, device=device))


def score_cases(
    model: nn.Module,
    cases: Sequence[dict],
    output: Literal["softmax", "sigmoid"],
    cfg: EvalConfig,
    n_organs: int,
    device: torch.device | str = "cpu",
) -> list[CaseScore]:
    """Predict and score each of `cases` (from load_folder / load_cases: (1, X, Y, Z) image and label).

    Each volume is predicted whole on its preprocessed grid, the label map mapped back to the file's
    original grid and scored there against the original label (counts; HD95 and surface Dice with the
    original voxel sizes). One window is run first untimed (`warm_up`); the timing covers the sliding
    window only.
    """
    warm_up(model, cfg, device)
    scores = []
    for index, case in enumerate(cases):
        start = time.perf_counter()
        labels = predict(model, case["image"][None].to(device), output, cfg).cpu()
        seconds = time.perf_counter() - start
        scores.append(score_volume(labels, case, n_organs, cfg.nsd_tolerance_mm, seconds, str(case.get("case_id", index))))
    return scores


def score_volume(
    labels: Tensor, case: dict, n_organs: int, nsd_tolerance_mm: float, seconds: float, case_id: str
) -> CaseScore:
    """Score one predicted label map (on the case's preprocessed grid) on the case's original grid.

    A missed organ's HD95 is the diagonal of the original image in mm: no organ that is found can
    score worse, so missing an organ never beats finding it badly.
    """
    labels, truth, spacing = in_original_space(labels, case)
    counts = confusion_counts(labels, truth, n_organs)
    distances, nsd = surface_scores(labels, truth, n_organs, spacing, nsd_tolerance_mm)
    hd95, missed = penalised_hd95(distances, counts, image_diagonal_mm(truth.shape, spacing))
    return CaseScore(case_id, counts, hd95, missed, nsd, seconds)


def combine(scores: Sequence[CaseScore], n_organs: int) -> Evaluation:
    """The test set's Evaluation from its volumes' scores: counts summed (pooled Dice), per-volume Dice
    and HD95 averaged over volumes (NaN-aware), misses counted."""
    if not scores:
        raise ValueError("no test volumes")
    counts = np.zeros((n_organs, 3), dtype=np.int64)
    for score in scores:
        counts += score.counts
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an organ in no volume: NaN is right
        hd95 = np.nanmean(np.stack([s.hd95_mm for s in scores]), axis=0)
        dice_per_volume = np.nanmean(np.stack([dice_from_counts(s.counts) for s in scores]), axis=0)
    return Evaluation(
        counts=counts,
        seconds_per_volume=float(np.mean([s.seconds for s in scores])),
        hd95_mm=hd95,
        cases=tuple(row for score in scores for row in score.rows()),
        dice_per_volume=dice_per_volume,
        hd95_missed=np.sum([s.missed for s in scores], axis=0).astype(np.int64),
    )


def evaluate(
    model: nn.Module,
    cases: list[dict],
    output: Literal["softmax", "sigmoid"],
    cfg: EvalConfig,
    n_organs: int,
) -> Evaluation:
    """Scores over `cases` in this process (see `score_cases`; the study scores on its hospital actors)."""
    if not cases:
        raise ValueError("no test volumes")
    return combine(score_cases(model, cases, output, cfg, n_organs), n_organs)


def in_original_space(labels: Tensor, case: dict) -> tuple[Tensor, Tensor, tuple[float, ...]]:
    """(prediction, reference, voxel sizes in mm) on the case's original grid.

    Hand-made cases without geometry are scored on their own grid with 1 mm voxels.
    """
    if "original_affine" not in case:
        return labels, case["label"][0].long(), (1.0,) * labels.ndim
    spacing = affine_to_spacing(case["original_affine"], r=labels.ndim)
    truth = case["original_label"][0].long()
    return to_original_space(labels, case), truth, tuple(float(s) for s in spacing)
