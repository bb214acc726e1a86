"""Score the models a study's method pre-trained (FedKD's organ teachers) on the study's test set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fedray.config import SiteConfig, load_run_config
from fedray.data.datasets import load_cases
from fedray.data.federation import held_out_folder
from fedray.data.sites import read_site_cases
from fedray.errors import ConfigError
from fedray.inference.predict import restored_strategy
from fedray.metrics.segmentation import dice_from_counts
from fedray.models.factory import build_model
from fedray.strategies.base import state_to_torch
from fedray.tracking.checkpoint import checkpoint_path, load_checkpoint
from fedray.training.evaluate import evaluate

# Below any logit a head can give in float32 arithmetic that matters: a channel no head fills is never
# the arg-max and never above the sigmoid threshold.
_ABSENT_LOGIT = -1e4


class HeadsInStudyOrder(nn.Module):
    """A model with one sigmoid head per organ of `heads`, its outputs placed in the study's organ
    channels (the others never predicted), so the study's evaluation scores it as it scores the study."""

    def __init__(self, model: nn.Module, heads: tuple[int, ...], n_organs: int) -> None:
        super().__init__()
        self.model, self.heads, self.n_organs = model, list(heads), n_organs

    def forward(self, x: Tensor) -> Tensor:
        own = self.model(x)
        out = own.new_full((own.shape[0], self.n_organs, *own.shape[2:]), _ABSENT_LOGIT)
        out[:, self.heads] = own
        return out


def score_pretrained(run_dir: str | Path) -> list[dict[str, Any]]:
    """One row per pre-trained model and head: pooled and per-volume Dice and HD95 of that organ on the
    study's test set, scored as the study scores its model (the same sliding window and rule), and
    whether the method uses the model for that organ.

    Raises:
        ConfigError: not a run folder, no checkpoint, or a method that pre-trains no models.
    """
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    path = checkpoint_path(run_dir)
    if not path.is_file():
        raise ConfigError(f"'{run_dir}' has no checkpoint {path.name}: the pre-trained models live in it.")
    checkpoint = load_checkpoint(path)
    organs = list(config.data.organs)
    strategy = restored_strategy(run_dir, config, checkpoint, build_model(config.model, len(organs)))
    pretrained = strategy.pretrained_models()
    if not pretrained:
        raise ConfigError(f"'{run_dir}': method {config.method.name} pre-trained no models (nothing to score).")
    listed = read_site_cases(SiteConfig(path=str(held_out_folder(config))), require_files=True).cases
    cases = load_cases(listed, organs, config.data.hu_window, config.data.preprocess)
    rows = []
    for name, item in pretrained.items():
        model = build_model(config.model, len(item.heads))
        model.load_state_dict(state_to_torch(item.state))
        scored = evaluate(HeadsInStudyOrder(model.eval(), item.heads, len(organs)), cases, "sigmoid", config.eval, len(organs))
        dice = dice_from_counts(scored.counts)
        for k in item.heads:
            rows.append({
                "model": name, "organ": organs[k], "used_for_organ": k in item.used_for,
                "dice": float(dice[k]), "dice_per_volume": float(scored.dice_per_volume[k]),
                "hd95_mm": float(scored.hd95_mm[k]), "round": checkpoint.round,
            })
    return rows
