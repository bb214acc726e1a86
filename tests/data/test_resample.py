"""SlabSpacingd: MONAI's Spacingd, bit for bit (data, affine, trace), with its sampling grid built in slabs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Invertd, Spacingd

import fedray.data.resample as resample
from fedray.data.resample import SlabSpacingd


def volume(shape, affine, dtype, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    image = torch.as_tensor(rng.integers(-1024, 2000, shape)).to(dtype)[None]
    label = torch.as_tensor(rng.integers(0, 5, shape)).to(torch.uint8)[None]
    return {"image": MetaTensor(image, affine=torch.as_tensor(affine, dtype=torch.float64)),
            "label": MetaTensor(label, affine=torch.as_tensor(affine, dtype=torch.float64))}


AFFINES = {
    "diagonal": np.diag([0.8, 0.7, 2.5, 1.0]),
    "oblique": np.array([[0.0, 0.1, -2.9, 10.0], [-0.9, 0.0, 0.2, 5.0], [0.05, 1.1, 0.0, -7.0], [0, 0, 0, 1.0]]),
}


@pytest.mark.parametrize("affine", AFFINES.values(), ids=AFFINES.keys())
@pytest.mark.parametrize("pixdim", [(1.5, 1.5, 3.0), (0.6, 1.0, 1.7)])
@pytest.mark.parametrize("slab", [1, 300, 2**19])
def test_slab_spacing_is_monais_spacing(monkeypatch, affine, pixdim, slab):
    monkeypatch.setattr(resample, "SLAB_VOXELS", slab)  # one plane, a few planes, one slab
    keys, mode = ["image", "label"], ("bilinear", "nearest")
    expected = Spacingd(keys=keys, pixdim=pixdim, mode=mode)(volume((23, 19, 11), affine, torch.float32))
    for dtype in (torch.float32, torch.int16):  # an integer volume gives the same floats
        ours = SlabSpacingd(keys=keys, pixdim=pixdim, mode=mode)(volume((23, 19, 11), affine, dtype))
        for key in keys:
            assert ours[key].dtype == expected[key].dtype == torch.float32
            assert torch.equal(ours[key].as_tensor(), expected[key].as_tensor()), key
            assert torch.equal(ours[key].affine, expected[key].affine), key
            [op], [theirs] = ours[key].applied_operations, expected[key].applied_operations
            assert {k: v for k, v in op.items() if k != "id"}.keys() == theirs.keys() - {"id"}
            assert op["class"] == theirs["class"] and op["extra_info"]["mode"] == theirs["extra_info"]["mode"]


def test_padding_outside_the_input_and_mapping_back_as_monai_does(monkeypatch):
    monkeypatch.setattr(resample, "SLAB_VOXELS", 50)
    keys, mode = ["image", "label"], ("bilinear", "nearest")
    data = volume((9, 7, 5), AFFINES["oblique"], torch.float32, seed=1)
    for padding in ("border", "zeros", "reflection"):
        theirs = Spacingd(keys=keys, pixdim=(1.0, 1.0, 1.0), mode=mode, padding_mode=padding)(dict(data))
        ours = SlabSpacingd(keys=keys, pixdim=(1.0, 1.0, 1.0), mode=mode, padding_mode=padding)(dict(data))
        assert all(torch.equal(ours[k].as_tensor(), theirs[k].as_tensor()) for k in keys), padding
    back = []
    for transform in (Spacingd, SlabSpacingd):  # the trace is MONAI's: Invertd undoes it the same way
        chain = transform(keys=keys, pixdim=(1.0, 1.0, 1.0), mode=mode)
        inverted = Invertd(keys="label", transform=chain, orig_keys="label", nearest_interp=True)(chain(dict(data)))
        back.append(inverted["label"].as_tensor())
    assert back[0].shape == data["label"].shape and torch.equal(back[0], back[1])


def test_an_unchanged_grid_is_left_alone():
    data = volume((6, 5, 4), np.diag([1.5, 1.5, 3.0, 1.0]), torch.int16)
    out = SlabSpacingd(keys=["image"], pixdim=(1.5, 1.5, 3.0))(data)
    assert out["image"].dtype == torch.float32 and torch.equal(out["image"].as_tensor(), data["image"].float())
