"""MONAI's `Spacingd` with the same output in a fraction of its memory: the sampling grid built in slabs.

MONAI resamples a volume by building the whole float64 sampling grid of the output (3 coordinates
per output voxel, plus a homogeneous base grid of 4 while it is made) and then one float64 output,
cast to float32. On a 512x512x112 CT resampled to 1.5 x 1.5 x 3 mm that is about 0.37 GB of grid
and 0.05 GB of float64 output on top of the float64 copy of the input, per key. `SlabSpacingd`
runs MONAI's own `Spacing` (its output grid, affine, metadata and transform trace are MONAI's), and
only the resampling itself, `AffineTransform`'s `affine_grid` + `grid_sample`, is done a slab of
output planes at a time into a float32 output. Each output voxel's grid coordinates and sample are
computed by the same operations on the same numbers as in the whole grid (the base grid's
coordinates are slices of the same `linspace`s, `grid_sample` reads each voxel's own coordinates),
so the result is bit for bit MONAI's: tests/data/test_resample.py compares them.

Only the eager path MONAI takes on CPU (`torch.nn.functional.grid_sample`, not MONAI's compiled
resampler or a spline order) is replaced; anything else is handed to MONAI unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import USE_COMPILED
from monai.data.meta_obj import get_track_meta
from monai.data.meta_tensor import MetaTensor, get_spatial_ndim
from monai.data.utils import AFFINE_TOL, compute_shape_offset, to_affine_nd
from monai.networks.utils import to_norm_affine
from monai.transforms import SpatialResample, Spacingd
from monai.transforms.inverse import TraceableTransform
from monai.transforms.spatial.functional import spatial_resample
from monai.transforms.utils import resolves_modes
from monai.transforms.utils_pytorch_numpy_unification import allclose
from monai.utils import (
    TraceKeys,
    convert_to_dst_type,
    convert_to_numpy,
    convert_to_tensor,
    ensure_tuple,
    fall_back_tuple,
    get_equivalent_dtype,
)

# Output voxels per slab: the slab's base grid and grid (56 bytes a voxel in float64) stay near 30 MB.
SLAB_VOXELS = 2**19


class SlabSpacingd(Spacingd):
    """`Spacingd` (same arguments, same result) whose resampling builds its grid a slab at a time."""

    def __init__(self, keys, pixdim, **kwargs) -> None:
        super().__init__(keys, pixdim, **kwargs)
        inner = self.spacing_transform.sp_resample
        self.spacing_transform.sp_resample = SlabResample(
            mode=inner.mode, padding_mode=inner.padding_mode, align_corners=inner.align_corners, dtype=inner.dtype,
            lazy=inner.lazy,
        )


class SlabResample(SpatialResample):
    """`SpatialResample` computing MONAI's eager CPU resampling in slabs of output planes."""

    def get_transform_info(self) -> dict:
        """As SpatialResample's (its trace names SpatialResample, so MONAI's inverse treats it as one)."""
        return {**super().get_transform_info(), TraceKeys.CLASS_NAME: SpatialResample.__name__}

    def __call__(self, img, dst_affine=None, spatial_size=None, mode=None, padding_mode=None, align_corners=None,
                 dtype=None, lazy=None):
        dtype_pt = get_equivalent_dtype(dtype or self.dtype or img.dtype, torch.Tensor)
        align_corners = align_corners if align_corners is not None else self.align_corners
        mode = mode if mode is not None else self.mode
        padding_mode = padding_mode if padding_mode is not None else self.padding_mode
        lazy_ = self.lazy if lazy is None else lazy
        if lazy_ or isinstance(mode, int) or USE_COMPILED or img.device.type != "cpu":  # not the path replaced
            return spatial_resample(img, dst_affine, spatial_size, mode, padding_mode, align_corners, dtype_pt,
                                    lazy=lazy_, transform_info=self.get_transform_info())
        return _slab_spatial_resample(img, dst_affine, spatial_size, mode, padding_mode, align_corners, dtype_pt,
                                      self.get_transform_info())


def _slab_spatial_resample(img, dst_affine, spatial_size, mode, padding_mode, align_corners, dtype_pt,
                           transform_info) -> torch.Tensor:
    """monai.transforms.spatial.functional.spatial_resample (MONAI 1.6, eager, grid_sample path), in slabs.

    Everything up to the resampling is MONAI's code as it stands; the difference is `_grid_sample_in_slabs`.
    """
    original_spatial_shape = img.peek_pending_shape() if isinstance(img, MetaTensor) else img.shape[1:]
    src_affine: torch.Tensor = img.peek_pending_affine() if isinstance(img, MetaTensor) else torch.eye(4)
    img = convert_to_tensor(data=img, track_meta=get_track_meta())
    max_rank = max(int(img.ndim) - 1, 1)
    spatial_rank = min(get_spatial_ndim(img), max_rank, 3)
    if (not isinstance(spatial_size, int) or spatial_size != -1) and spatial_size is not None:
        spatial_rank = min(len(ensure_tuple(spatial_size)), max_rank, 3)
    src_affine = to_affine_nd(spatial_rank, src_affine).to(torch.float64)
    dst_affine = to_affine_nd(spatial_rank, dst_affine) if dst_affine is not None else src_affine
    dst_affine = convert_to_dst_type(dst_affine, src_affine)[0]
    if not isinstance(dst_affine, torch.Tensor):
        raise ValueError(f"dst_affine should be a torch.Tensor, got {type(dst_affine)}")
    in_spatial_size = torch.tensor(original_spatial_shape[:spatial_rank])
    if isinstance(spatial_size, int) and (spatial_size == -1):
        spatial_size = in_spatial_size
    elif spatial_size is None and spatial_rank > 1:
        spatial_size, _ = compute_shape_offset(in_spatial_size, src_affine, dst_affine)  # type: ignore
    spatial_size = torch.tensor(fall_back_tuple(ensure_tuple(spatial_size)[:spatial_rank], in_spatial_size,
                                                lambda x: x >= 0))
    extra_info = {
        "dtype": str(dtype_pt)[6:],
        "mode": mode.value if isinstance(mode, Enum) else mode,
        "padding_mode": padding_mode.value if isinstance(padding_mode, Enum) else padding_mode,
        "align_corners": align_corners if align_corners is not None else TraceKeys.NONE,
        "src_affine": src_affine,
    }
    try:
        _s = convert_to_numpy(src_affine)
        _d = convert_to_numpy(dst_affine)
        xform = np.eye(spatial_rank + 1) if spatial_rank < 2 else np.linalg.solve(_s, _d)
    except (np.linalg.LinAlgError, RuntimeError) as e:
        raise ValueError(f"src affine is not invertible {_s}, {_d}.") from e
    xform = convert_to_tensor(to_affine_nd(spatial_rank, xform)).to(device=img.device, dtype=torch.float64)
    affine_unchanged = (
        allclose(src_affine, dst_affine, atol=AFFINE_TOL) and allclose(spatial_size, in_spatial_size)
    ) or (allclose(xform, np.eye(len(xform)), atol=AFFINE_TOL) and allclose(spatial_size, in_spatial_size))
    meta_info = TraceableTransform.track_transform_meta(
        img, sp_size=spatial_size, affine=None if affine_unchanged else xform, extra_info=extra_info,
        orig_size=original_spatial_shape, transform_info=transform_info, lazy=False,
    )
    if affine_unchanged:
        out = _new_tensor(img, dtype=torch.float32)
        return out.copy_meta_from(meta_info) if isinstance(out, MetaTensor) else out
    img = img.as_tensor() if isinstance(img, MetaTensor) else img
    im_size = list(img.shape)
    chns, in_sp_size, additional_dims = im_size[0], im_size[1 : spatial_rank + 1], im_size[spatial_rank + 1 :]
    if additional_dims:
        img = img.reshape([-1] + in_sp_size)
    img = img.to(dtype_pt)
    _, _m, _p, _ = resolves_modes(mode, padding_mode)
    img = _grid_sample_in_slabs(img, xform.to(img), [int(s) for s in spatial_size], _m, _p, align_corners)
    if additional_dims:
        img = img.reshape((chns, *spatial_size, *additional_dims))
    out = _new_tensor(img, dtype=torch.float32)
    return out.copy_meta_from(meta_info) if isinstance(out, MetaTensor) else out


def _new_tensor(img, dtype):
    return convert_to_tensor(img.as_tensor() if isinstance(img, MetaTensor) else img, dtype=dtype,
                             track_meta=get_track_meta(), wrap_sequence=True)


def _grid_sample_in_slabs(src: torch.Tensor, theta: torch.Tensor, spatial_size: Sequence[int], mode, padding_mode,
                          align_corners) -> torch.Tensor:
    """`AffineTransform(normalized=False, reverse_indexing=True)(src[None], theta, spatial_size)[0]` as float32.

    The theta preparation is AffineTransform.forward's; the grid of output planes [a, b) along the first
    spatial axis is what `affine_grid` makes for those planes (ATen's base grid: `linspace(-1, 1, n)`,
    scaled by (n - 1) / n without align_corners, then one batched matmul with theta), sampled by
    `grid_sample` and rounded to float32 into the output.
    """
    src = src[None].contiguous()
    sr = src.dim() - 2
    theta = theta[None].clone()
    if tuple(theta.shape[1:]) in ((2, 3), (3, 4)):
        pad = torch.tensor([0, 0, 1] if theta.shape[1] == 2 else [0, 0, 0, 1]).repeat(1, 1, 1).to(theta)
        theta = torch.cat([theta, pad], dim=1)
    src_size = tuple(src.shape)
    dst_size = src_size[:2] + tuple(spatial_size)
    theta = to_norm_affine(affine=theta, src_size=src_size[2:], dst_size=dst_size[2:], align_corners=align_corners,
                           zero_centered=False)
    rev_idx = torch.as_tensor(range(sr - 1, -1, -1), device=src.device)
    theta[:, :sr] = theta[:, rev_idx]
    theta[:, :, :sr] = theta[:, :, rev_idx]
    theta = theta[:, :sr]  # one image: batch 1, as AffineTransform's theta
    align = bool(align_corners)
    if sr == 2:  # a 2D image: one slab is small enough
        grid = F.affine_grid(theta=theta, size=list(dst_size), align_corners=align)
        return F.grid_sample(src, grid, mode=mode, padding_mode=padding_mode, align_corners=align)[0].float()
    n, c, depth, height, width = dst_size
    out = torch.empty((c, depth, height, width), dtype=torch.float32)
    steps = [_linspace_from_neg_one(size, align, theta.dtype) for size in (width, height, depth)]
    planes = max(1, SLAB_VOXELS // max(1, height * width))
    for start in range(0, depth, planes):
        stop = min(start + planes, depth)
        base = torch.empty((n, stop - start, height, width, 4), dtype=theta.dtype)
        base.select(-1, 0).copy_(steps[0])
        base.select(-1, 1).copy_(steps[1].unsqueeze(-1))
        base.select(-1, 2).copy_(steps[2][start:stop].unsqueeze(-1).unsqueeze(-1))
        base.select(-1, 3).fill_(1)
        grid = base.view(n, -1, 4).bmm(theta.transpose(1, 2)).view(n, stop - start, height, width, 3)
        del base
        sampled = F.grid_sample(src, grid, mode=mode, padding_mode=padding_mode, align_corners=align)
        out[:, start:stop] = sampled[0]
    return out


def _linspace_from_neg_one(steps: int, align_corners: bool, dtype: torch.dtype) -> torch.Tensor:
    """ATen's affine_grid coordinates along one axis, as a 1-D tensor (a single plane: [0])."""
    if steps <= 1:
        return torch.zeros(1, dtype=dtype)
    values = torch.linspace(-1, 1, steps, dtype=dtype)
    return values if align_corners else values * (steps - 1) / steps
