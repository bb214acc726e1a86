"""The paper's multi-head 3D U-Net: DoDNet's residual backbone, shared embedding, organ heads."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# DoDNet adds this to the filter variance before the square root. The variance is taken over
# at least 27 weights (the smallest fan-in is conv1's in_channels x 3 x 3 x 3), and the
# square root's argument never reaches zero, so the paper's value is kept: no NaN on CPU.
WEIGHT_STD_EPS = 1e-12


class WSConv3d(nn.Conv3d):
    """3D convolution with Weight Standardisation (Qiao et al. 2019), as in DoDNet's backbone.

    Each output filter is centred and scaled to unit (unbiased) standard deviation over its
    (in_channels, kx, ky, kz) weights before every convolution.

    The standardised kernel is handed to the convolution in `kernel_memory_format`: with a
    channels-last kernel oneDNN takes its channels-last 3D path, whose weight gradient at 8
    channels and 32^3 is about 5x faster on a CPU than the default layout's (same function,
    float rounding aside; `python -m fedray.benchmarks.trunk` measures both).
    """

    kernel_memory_format: torch.memory_format = torch.channels_last_3d

    def standardized_weight(self) -> Tensor:
        """The kernel actually convolved.

        Returns:
            (out_channels, in_channels // groups, kx, ky, kz) weights with per-filter mean 0
            and std 1.
        """
        filters = self.weight.flatten(start_dim=1)
        centred = filters - filters.mean(dim=1, keepdim=True)
        std = torch.sqrt(centred.var(dim=1, keepdim=True) + WEIGHT_STD_EPS)
        return (centred / std).view_as(self.weight).contiguous(memory_format=self.kernel_memory_format)

    def forward(self, x: Tensor) -> Tensor:
        """Convolve `x` (B, C_in, X, Y, Z) with the standardised kernel."""
        return self._conv_forward(x, self.standardized_weight(), self.bias)


def _group_count(channels: int, norm_groups: int) -> int:
    """min(norm_groups, channels) GroupNorm groups; they must divide `channels`."""
    groups = min(norm_groups, channels)
    if channels % groups:
        raise ValueError(f"GroupNorm: {groups} groups do not divide {channels} channels")
    return groups


def _norm_relu(channels: int, norm_groups: int) -> list[nn.Module]:
    """GroupNorm -> ReLU, the pre-activation in front of every backbone conv."""
    # In-place ReLU is safe: it only overwrites the fresh GroupNorm output.
    return [nn.GroupNorm(_group_count(channels, norm_groups), channels), nn.ReLU(inplace=True)]


class PreActResidualBlock(nn.Module):
    """DoDNet's `NoBottleneck`: GN-ReLU-conv3-GN-ReLU-conv3 added to a shortcut.

    The shortcut is the identity, or GN-ReLU-1x1x1 conv when the stride or width changes.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm_groups: int) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            *_norm_relu(in_channels, norm_groups),
            WSConv3d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            *_norm_relu(out_channels, norm_groups),
            WSConv3d(out_channels, out_channels, 3, padding=1, bias=False),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                *_norm_relu(in_channels, norm_groups),
                WSConv3d(in_channels, out_channels, 1, stride=stride, bias=False),
            )

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_channels, X, Y, Z) -> (B, out_channels, X/stride, Y/stride, Z/stride)."""
        return self.residual(x) + self.shortcut(x)


def _residual_stage(
    in_channels: int, out_channels: int, n_blocks: int, stride: int, norm_groups: int
) -> nn.Sequential:
    """`n_blocks` residual blocks; only the first one strides and changes width."""
    return nn.Sequential(
        PreActResidualBlock(in_channels, out_channels, stride, norm_groups),
        *(
            PreActResidualBlock(out_channels, out_channels, 1, norm_groups)
            for _ in range(n_blocks - 1)
        ),
    )


def _organ_head(embed_channels: int, hidden: int, outputs: int) -> nn.Sequential:
    """1x1x1 convs with bias: embed->hidden, ReLU, hidden->hidden, ReLU, hidden->outputs."""
    return nn.Sequential(
        nn.Conv3d(embed_channels, hidden, 1),
        nn.ReLU(inplace=True),
        nn.Conv3d(hidden, hidden, 1),
        nn.ReLU(inplace=True),
        nn.Conv3d(hidden, outputs, 1),
    )


class MultiHeadUNet3D(nn.Module):
    """Residual 3D U-Net with a shared voxel embedding read by `n_heads` static heads.

    Encoder: `stem` (3x3x3 conv to widths[0]), `encoder` stages 0..L-1 (stage 0 stride 1, the
    others stride 2), `fusion` (GN-ReLU-1x1x1 conv on the bottleneck). Decoder: per level,
    trilinear x2 upsampling, ADDITIVE skip from the matching encoder stage, one residual
    block; widths[s] -> widths[s-1], and widths[0] -> widths[0] at full resolution. Then the
    shared `embedding` (GN-ReLU-1x1x1 conv with bias) and the `heads`. The model returns
    logits; the loss applies an independent sigmoid per channel.

    At paper width (32, 64, 128, 256, 256) this is the authors' module layout. `fusion` maps
    widths[-1] to widths[-2] so the first additive skip also matches when the last two
    widths differ, e.g. (8, 16, 32); at paper width it is DoDNet's 256 -> 256. DoDNet's
    unused `GAP` GroupNorm is left out: the paper's 17,287,894 parameters include its 512,
    so this model has 17,287,382 with 7 heads of 2 outputs.

    Args:
        n_heads: number of organ heads (tasks).
        in_channels: image channels.
        outputs_per_head: logit channels per head (2 in the paper: organ, tumour).
        widths: channels of encoder stages 0..L-1.
        blocks: residual blocks per encoder stage.
        embed_channels: channels of the shared embedding.
        head_hidden: hidden channels of each head.
        norm_groups: GroupNorm groups, capped at the channel count.
    """

    def __init__(
        self,
        n_heads: int,
        *,
        in_channels: int = 1,
        outputs_per_head: int = 1,
        widths: Sequence[int] = (32, 64, 128, 256, 256),
        blocks: Sequence[int] = (1, 2, 2, 2, 2),
        embed_channels: int = 8,
        head_hidden: int = 8,
        norm_groups: int = 16,
    ) -> None:
        super().__init__()
        widths, blocks = tuple(widths), tuple(blocks)
        if n_heads < 1:
            raise ValueError(f"n_heads must be >= 1, got {n_heads}")
        if len(widths) < 2 or len(blocks) != len(widths):
            raise ValueError(
                f"need >= 2 widths and one block count per width, got {widths}, {blocks}"
            )
        if min(blocks) < 1:
            raise ValueError(f"every stage needs >= 1 block, got {blocks}")
        self.n_heads = n_heads
        self.outputs_per_head = outputs_per_head
        self.size_divisor = 2 ** (len(widths) - 1)

        self.stem = WSConv3d(in_channels, widths[0], 3, padding=1, bias=False)
        stage_inputs = (widths[0],) + widths[:-1]
        self.encoder = nn.ModuleList(
            _residual_stage(c_in, c_out, n, 1 if level == 0 else 2, norm_groups)
            for level, (c_in, c_out, n) in enumerate(zip(stage_inputs, widths, blocks))
        )
        self.fusion = nn.Sequential(
            *_norm_relu(widths[-1], norm_groups),
            WSConv3d(widths[-1], widths[-2], 1, bias=False),
        )
        # decoder[i] fuses encoder stage L-2-i and maps widths[s] -> widths[max(s-1, 0)].
        skip_levels = range(len(widths) - 2, -1, -1)
        self.decoder = nn.ModuleList(
            PreActResidualBlock(widths[s], widths[max(s - 1, 0)], 1, norm_groups)
            for s in skip_levels
        )
        self.embedding = nn.Sequential(
            *_norm_relu(widths[0], norm_groups),
            nn.Conv3d(widths[0], embed_channels, 1),
        )
        self.heads = nn.ModuleList(
            _organ_head(embed_channels, head_hidden, outputs_per_head) for _ in range(n_heads)
        )

    @staticmethod
    def head_parameter_prefix(head: int) -> str:
        """state_dict key prefix of head `head`, e.g. "heads.3."."""
        return f"heads.{head}."

    def _check_spatial_size(self, x: Tensor) -> None:
        for axis, size in enumerate(x.shape[2:]):
            if size % self.size_divisor:
                raise ValueError(
                    f"input spatial size {size} (axis {axis} of {tuple(x.shape[2:])}) is not "
                    f"divisible by {self.size_divisor} = 2**{len(self.encoder) - 1}, the "
                    "network's total downsampling"
                )

    def embed(self, x: Tensor) -> Tensor:
        """Backbone and shared embedding, one pass.

        Args:
            x: (B, in_channels, X, Y, Z) image; X, Y, Z divisible by 2**(len(widths)-1).

        Returns:
            (B, embed_channels, X, Y, Z) voxel embedding.
        """
        self._check_spatial_size(x)
        skips = []
        features = self.stem(x)
        for stage in self.encoder:
            features = stage(features)
            skips.append(features)
        features = self.fusion(skips.pop())
        for block, skip in zip(self.decoder, reversed(skips)):
            # Upsampling to the skip's size is DoDNet's x2 trilinear upsampling (identical
            # when sizes double) with its re-interpolation on mismatch folded in.
            features = F.interpolate(
                features, size=skip.shape[2:], mode="trilinear", align_corners=False
            )
            features = block(features + skip)
        return self.embedding(features)

    def forward_head(self, x: Tensor, head: int) -> Tensor:
        """Backbone and one head.

        Args:
            x: (B, in_channels, X, Y, Z) image.
            head: index of the head to run.

        Returns:
            (B, outputs_per_head, X, Y, Z) logits.
        """
        return self.heads[head](self.embed(x))

    def forward_all(self, x: Tensor) -> Tensor:
        """Backbone once, then every head on the shared embedding.

        Args:
            x: (B, in_channels, X, Y, Z) image.

        Returns:
            (B, n_heads * outputs_per_head, X, Y, Z) logits, head-major: channel
            h * outputs_per_head + k is output k of head h.
        """
        embedding = self.embed(x)
        return torch.cat([head(embedding) for head in self.heads], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        """Same as `forward_all`, so sliding-window inference can call the model directly."""
        return self.forward_all(x)
