"""Evaluation against inference: one evaluation of clinical-size volumes (predict, map back, score)
against the sliding-window inference of the same volumes, on the same threads."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import torch

from fedray.config import EvalConfig, ModelConfig, PreprocessConfig
from fedray.data.datasets import load_folder
from fedray.data.phantom import PhantomSpec, write_test_set
from fedray.models.factory import build_model
from fedray.organs import ORGANS
from fedray.training.evaluate import in_original_space, predict, score_volume, warm_up

HU_WINDOW = (-325.0, 325.0)


def write_volumes(folder: Path, n: int, shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> Path:
    """`n` fully-labelled phantom volumes in the MSD layout (int16 images), written once."""
    if not (folder / "dataset.json").is_file():
        write_test_set(folder, n, seed=0, spec=PhantomSpec(shape=shape, spacing=spacing))
    return folder


def shifted_reference(case: dict, voxels: int = 2) -> torch.Tensor:
    """The case's preprocessed reference moved `voxels` along x: a prediction with realistic surfaces
    and errors, to score (an untrained network's output is no segmentation to time scoring on)."""
    return torch.roll(case["label"][0].long(), voxels, dims=0)


def full_grid_scoring_s(labels: torch.Tensor, case: dict, tolerance_mm: float) -> float:
    """Seconds to score one volume as before regions: MONAI's HD95 and surface Dice per organ on the
    whole original grid, counts organ by organ (the reference point of the speed-up)."""
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    start = time.perf_counter()
    prediction, truth, spacing = in_original_space(labels, case)
    for k in range(len(ORGANS)):
        pred, true = prediction == k + 1, truth == k + 1
        [int(torch.count_nonzero(m)) for m in (pred & true, pred & ~true, ~pred & true)]
        if pred.any() and true.any():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                compute_hausdorff_distance(pred[None, None], true[None, None], include_background=True,
                                           percentile=95, spacing=list(spacing))
                one_hot = [torch.stack([~m, m])[None] for m in (pred, true)]
                compute_surface_dice(one_hot[0], one_hot[1], class_thresholds=[tolerance_mm], spacing=list(spacing))
    return time.perf_counter() - start


def run(work_dir: Path, n: int, shape: tuple[int, int, int], spacing: tuple[float, float, float],
        threads: int, compare_full_grid: bool) -> dict:
    """Inference and evaluation seconds of `n` volumes; the evaluation's ratio to inference."""
    torch.set_num_threads(threads)
    folder = write_volumes(work_dir / f"test-{'x'.join(map(str, shape))}-{n}", n, shape, spacing)
    preprocess = PreprocessConfig(spacing=(1.5, 1.5, 3.0))
    start = time.perf_counter()
    cases = load_folder(folder, ORGANS, HU_WINDOW, preprocess=preprocess)
    load_s = time.perf_counter() - start
    torch.manual_seed(0)
    model = build_model(
        ModelConfig(name="multihead_unet", output="sigmoid", channels=(8, 16, 32, 64), blocks=(1, 1, 1, 1)), len(ORGANS)
    ).eval()
    cfg = EvalConfig(roi_size=(64, 64, 64), overlap=0.25)
    warm_up(model, cfg)
    infer_s, score_s, counts = [], [], []
    for case in cases:
        start = time.perf_counter()
        predict(model, case["image"][None], "sigmoid", cfg)
        infer_s.append(time.perf_counter() - start)
        labels = shifted_reference(case)
        start = time.perf_counter()
        score = score_volume(labels, case, len(ORGANS), cfg.nsd_tolerance_mm, infer_s[-1], case["case_id"])
        score_s.append(time.perf_counter() - start)
        counts.append(score.counts)
    full_s = full_grid_scoring_s(shifted_reference(cases[0]), cases[0], cfg.nsd_tolerance_mm) if compare_full_grid else None
    region_first = score_s[0]
    evaluation_s = sum(infer_s) + sum(score_s)
    return {
        "benchmark": "evaluation",
        "volumes": n,
        "original_shape": list(shape),
        "original_spacing_mm": list(spacing),
        "preprocess_spacing_mm": [1.5, 1.5, 3.0],
        "preprocessed_shapes": [list(c["image"].shape[1:]) for c in cases],
        "model": "multihead_unet widths 8-64, one block per level, 7 sigmoid heads",
        "roi_size": list(cfg.roi_size),
        "overlap": cfg.overlap,
        "threads": threads,
        "load_s": load_s,
        "inference_s": infer_s,
        "scoring_s": score_s,
        "inference_total_s": sum(infer_s),
        "evaluation_total_s": evaluation_s,
        "evaluation_over_inference": evaluation_s / sum(infer_s),
        "target": 1.5,
        "scored_prediction": "the reference shifted by 2 voxels along x (preprocessed grid), mapped back",
        "full_grid_scoring_s_first_volume": full_s,
        "region_scoring_s_first_volume": region_first,
        "organs_in_reference": [int(np.sum(c[:, 0] + c[:, 2] > 0)) for c in counts],
    }
