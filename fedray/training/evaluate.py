"""Evaluate a model on fully-labelled volumes: sliding-window inference, label maps, Dice counts, timing."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from torch import Tensor, nn

from fedray.config import EvalConfig
from fedray.metrics.segmentation import confusion_counts


@dataclass(frozen=True)
class Evaluation:
    """Summed per-organ counts over the test volumes and inference time."""

    counts: np.ndarray  # (n_organs, 3) TP, FP, FN summed over volumes
    seconds_per_volume: float


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
    """Counts summed over `cases` (dicts with (1, X, Y, Z) image and label) and seconds per volume.

    The first volume is run once untimed as a warm-up, so every method is timed the same way.
    """
    if not cases:
        raise ValueError("no test volumes")
    predict(model, cases[0]["image"][None], output, cfg)  # warm-up: allocator, kernels
    counts = np.zeros((n_organs, 3), dtype=np.int64)
    seconds = 0.0
    for case in cases:
        start = time.perf_counter()
        labels = predict(model, case["image"][None], output, cfg)
        seconds += time.perf_counter() - start
        counts += confusion_counts(labels, case["label"][0].long(), n_organs)
    return Evaluation(counts=counts, seconds_per_volume=seconds / len(cases))
