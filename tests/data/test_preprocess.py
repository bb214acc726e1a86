"""CT preprocessing options (spacing, body crop, augmentation) on tiny NIfTI files written here."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import torch
from monai.transforms import Invertd

from fedray.config import AugmentConfig, PreprocessConfig
from fedray.data.datasets import load_folder, preprocessing, to_original_space
from fedray.data.patches import PatchSampler
from fedray.data.sites import label_lookup


def write_case(folder, image, label, affine):
    """An MSD folder with one case whose labels are 1 = liver, 2 = spleen."""
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    nib.save(nib.Nifti1Image(image.astype(np.int16), affine), folder / "imagesTr" / "c0.nii.gz")
    nib.save(nib.Nifti1Image(label.astype(np.uint8), affine), folder / "labelsTr" / "c0.nii.gz")
    training = [{"image": "./imagesTr/c0.nii.gz", "label": "./labelsTr/c0.nii.gz"}]
    (folder / "dataset.json").write_text(json.dumps({"labels": {"1": "liver", "2": "spleen"}, "training": training}))
    return folder


def body_with_organs(shape=(12, 10, 8)):
    """Air around a box of soft tissue (0 HU) holding two organs at 100 and 200 HU (label * 100)."""
    label = np.zeros(shape, dtype=np.uint8)
    label[3:7, 3:6, 2:5] = 1
    label[7:9, 5:8, 3:6] = 2
    image = np.full(shape, -1000.0)
    image[2:10, 2:9, 1:7] = 0.0
    image[label > 0] = 100.0 * label[label > 0]
    return image, label


def test_defaults_keep_the_grid_and_the_original_label(tmp_path):
    image, label = body_with_organs()
    folder = write_case(tmp_path / "s", image, label, np.diag([2.0, 2.0, 3.0, 1.0]))
    [case] = load_folder(folder, ["liver", "spleen"], (-325.0, 325.0))
    assert case["image"].shape == (1, 12, 10, 8)
    assert torch.equal(case["label"], case["original_label"])  # RAS, nothing resampled or cropped
    assert torch.equal(case["affine"], case["original_affine"])
    assert torch.equal(case["label"][0], torch.as_tensor(label))


def test_resampling_to_a_target_spacing(tmp_path):
    # MONAI keeps the span between the first and last voxel centres: (n - 1) * spacing / target + 1
    # voxels. x: 7 * 2 / 1 + 1 = 15; y: 9 * 2 / 2 + 1 = 10; z: 7 * 3 / 1.5 + 1 = 15.
    image, label = body_with_organs(shape=(8, 10, 8))
    folder = write_case(tmp_path / "s", image, label, np.diag([2.0, 2.0, 3.0, 1.0]))
    config = PreprocessConfig(spacing=(1.0, 2.0, 1.5))
    [case] = load_folder(folder, ["liver", "spleen"], (-325.0, 325.0), preprocess=config)
    assert case["image"].shape == case["label"].shape == (1, 15, 10, 15)
    assert case["affine"].diagonal().tolist() == [1.0, 2.0, 1.5, 1.0]
    assert case["original_label"].shape == (1, 8, 10, 8)  # the file's grid, kept for evaluation
    assert set(case["label"].unique().tolist()) == {0, 1, 2}  # nearest: no in-between label values


def test_foreground_crop_keeps_the_body(tmp_path):
    image, label = body_with_organs()
    folder = write_case(tmp_path / "s", image, label, np.diag([2.0, 2.0, 3.0, 1.0]))
    [case] = load_folder(folder, ["liver", "spleen"], (-325.0, 325.0), preprocess=PreprocessConfig(crop_foreground=True))
    assert case["image"].shape == (1, 8, 7, 6)  # the 0 HU box at [2:10, 2:9, 1:7]
    assert float(case["image"].min()) == 0.0  # no air left
    assert torch.equal(case["label"][0], torch.as_tensor(label[2:10, 2:9, 1:7]))
    assert case["affine"][:3, 3].tolist() == [4.0, 4.0, 3.0]  # the crop's corner in mm


def test_mapping_back_matches_monai_invertd(tmp_path):
    # Non-RAS (axes permuted and flipped), anisotropic, resampled and cropped: the label mapped back
    # to the file's grid is the original label, exactly as MONAI's Invertd gives it.
    image, label = body_with_organs()
    affine = np.array([[0, 0, -3.0, 10], [-1.0, 0, 0, 5], [0, 2.0, 0, -7], [0, 0, 0, 1]])
    folder = write_case(tmp_path / "s", image, label, affine)
    chain = preprocessing(label_lookup({1: "liver", 2: "spleen"}, ["liver", "spleen"]), (-325.0, 325.0),
                          PreprocessConfig(spacing=(1.0, 1.0, 1.0), crop_foreground=True))
    chain.transforms = chain.transforms[:-1]  # keep MONAI's metadata, which Invertd reads
    data = chain({"image": str(folder / "imagesTr/c0.nii.gz"), "label": str(folder / "labelsTr/c0.nii.gz")})
    assert data["image"].shape != (1, 12, 10, 8)
    inverted = Invertd(keys="label", transform=chain, orig_keys="image", nearest_interp=True)(dict(data))["label"]
    ours = to_original_space(data["label"].as_tensor()[0].long(), data)
    assert torch.equal(ours, torch.as_tensor(label).long())
    assert torch.equal(ours, inverted.as_tensor()[0].long())


def sampler_cases(tmp_path):
    rng = np.random.default_rng(0)
    label = np.zeros((24, 24, 24))
    label[8:14, 8:14, 8:14] = 1
    folder = write_case(tmp_path / "s", rng.normal(0, 50, (24, 24, 24)), label, np.diag([2.0, 2.0, 3.0, 1.0]))
    return load_folder(folder, ["liver", "spleen"], (-325.0, 325.0))


def test_augmentation_off_leaves_batches_as_before(tmp_path):
    cases = sampler_cases(tmp_path)
    plain = next(PatchSampler((16, 16, 16), 0.5, 3).batches(cases, 7))
    off = next(PatchSampler((16, 16, 16), 0.5, 3, augment=AugmentConfig()).batches(cases, 7))
    assert torch.equal(plain.image, off.image) and torch.equal(plain.label, off.label)


def test_augmentation_is_seeded_and_keeps_the_patches(tmp_path):
    cases = sampler_cases(tmp_path)
    plain = PatchSampler((16, 16, 16), 0.5, 3).batches(cases, 7)
    flips = PatchSampler((16, 16, 16), 0.5, 3, augment=AugmentConfig(flip_prob=1.0)).batches(cases, 7)
    for _ in range(2):  # same patches, each flipped on all three axes
        batch, flipped = next(plain), next(flips)
        assert torch.equal(flipped.image, batch.image.flip(2, 3, 4))
        assert torch.equal(flipped.label, batch.label.flip(2, 3, 4))

    everything = AugmentConfig(flip_prob=0.5, intensity_prob=1.0, affine_prob=1.0)
    sampler = PatchSampler((16, 16, 16), 0.5, 3, augment=everything)
    first, again = next(sampler.batches(cases, 7)), next(sampler.batches(cases, 7))
    assert torch.equal(first.image, again.image) and torch.equal(first.label, again.label)
    assert first.image.shape == (3, 1, 16, 16, 16) and first.label.dtype == torch.long
    assert set(first.label.unique().tolist()) <= {0, 1}  # labels stay labels (nearest)
    assert not torch.equal(next(sampler.batches(cases, 8)).image, first.image)
    unaugmented = next(PatchSampler((16, 16, 16), 0.5, 3).batches(cases, 7))
    assert not torch.equal(first.image, unaugmented.image)
