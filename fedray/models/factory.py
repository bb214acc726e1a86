"""Build the configured network; every model maps (B, 1, X, Y, Z) CT to per-voxel logits."""

from __future__ import annotations

from monai.networks.nets import UNet
from torch import nn

from fedray.config import ModelConfig


def output_channels(cfg: ModelConfig, n_organs: int) -> int:
    """softmax: background + organs; sigmoid: one channel per organ."""
    return n_organs + 1 if cfg.output == "softmax" else n_organs


def build_model(cfg: ModelConfig, n_organs: int) -> nn.Module:
    """The network named by `cfg` for `n_organs` study organs."""
    if cfg.name == "multihead_unet":
        from fedray.models.multihead import MultiHeadUNet3D

        softmax = cfg.output == "softmax"
        return MultiHeadUNet3D(
            n_heads=1 if softmax else n_organs,
            outputs_per_head=n_organs + 1 if softmax else 1,
            widths=cfg.channels,
            blocks=cfg.blocks or (1,) * len(cfg.channels),
            norm_groups=cfg.norm_groups,
        )
    return UNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=output_channels(cfg, n_organs),
        channels=cfg.channels,
        strides=cfg.strides,
        num_res_units=cfg.num_res_units,
    )


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
