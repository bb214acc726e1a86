"""Inference speed: the multi-head U-Net (all organs, one backbone pass) against one single-organ model
per organ, on the same volumes, region of interest, overlap and threads, warm-up excluded."""

from __future__ import annotations

import statistics
import time

import torch

from fedray.config import EvalConfig, ModelConfig
from fedray.models.factory import build_model, count_parameters
from fedray.training.evaluate import predict


def time_inference(model: torch.nn.Module, volumes: list[torch.Tensor], cfg: EvalConfig, repeats: int) -> float:
    """Median over `repeats` of the seconds to predict every volume once (after one warm-up volume)."""
    predict(model, volumes[0], "sigmoid", cfg)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for volume in volumes:
            predict(model, volume, "sigmoid", cfg)
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def compare(
    model_cfg: ModelConfig, n_organs: int, volumes: list[torch.Tensor], cfg: EvalConfig, repeats: int
) -> dict:
    """Seconds per volume of one multi-head model vs `n_organs` single-head models run one after another."""
    torch.manual_seed(0)
    multi = build_model(model_cfg, n_organs).eval()
    singles = [build_model(model_cfg, 1).eval() for _ in range(n_organs)]
    multi_s = time_inference(multi, volumes, cfg, repeats) / len(volumes)
    single_s = sum(time_inference(m, volumes, cfg, repeats) for m in singles) / len(volumes)
    return {
        "widths": list(model_cfg.channels),
        "blocks": list(model_cfg.blocks),
        "organs": n_organs,
        "volume_shape": list(volumes[0].shape[2:]),
        "volumes": len(volumes),
        "roi_size": list(cfg.roi_size),
        "overlap": cfg.overlap,
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "multihead_params": count_parameters(multi),
        "single_models_params_total": sum(count_parameters(m) for m in singles),
        "multihead_s_per_volume": multi_s,
        "single_models_s_per_volume": single_s,
        "speedup": single_s / multi_s,
    }
