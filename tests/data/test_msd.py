"""Reading MSD folders and loading them through the MONAI chain (real NIfTI files written here)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from fedray.data.datasets import load_folder
from fedray.data.patches import PatchSampler
from fedray.data.msd import read_site
from fedray.errors import DataError


def write_msd(folder, labels: dict[str, str], volumes, affine=None):
    """Write an MSD folder whose label files hold the given arrays."""
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    affine = np.diag([2.0, 2.0, 3.0, 1.0]) if affine is None else affine
    training = []
    for i, (image, label) in enumerate(volumes):
        nib.save(nib.Nifti1Image(image.astype(np.int16), affine), folder / "imagesTr" / f"c{i}.nii.gz")
        nib.save(nib.Nifti1Image(label.astype(np.uint8), affine), folder / "labelsTr" / f"c{i}.nii.gz")
        training.append({"image": f"./imagesTr/c{i}.nii.gz", "label": f"./labelsTr/c{i}.nii.gz"})
    (folder / "dataset.json").write_text(json.dumps({"labels": labels, "training": training}))
    return folder


def test_reads_cases_and_organs_by_name(tmp_path):
    label = np.zeros((8, 8, 8))
    label[2:4, 2:4, 2:4] = 1
    label[5:7, 5:7, 5:7] = 2
    site = read_site(write_msd(tmp_path / "s", {"0": "background", "1": "spleen", "2": "liver"}, [(label * 0, label)]))
    assert site.organs == ("liver", "spleen")  # study order, whatever the site's numbering
    assert [c.case_id for c in site.cases] == ["c0"]


def test_site_numbering_maps_to_study_indices(tmp_path):
    image = np.full((8, 8, 8), 40)
    label = np.zeros((8, 8, 8))
    label[0:2] = 1  # spleen in the site's numbering
    label[4:6] = 2  # liver
    folder = write_msd(tmp_path / "s", {"0": "background", "1": "spleen", "2": "liver"}, [(image, label)])
    [case] = load_folder(folder, ["liver", "kidney_left", "spleen"], (-325.0, 325.0))
    mapped = case["label"][0]
    assert int(mapped[0, 0, 0]) == 3 and int(mapped[4, 0, 0]) == 1 and int(mapped[3, 0, 0]) == 0
    assert case["labelled"].tolist() == [True, False, True]
    assert torch.allclose(case["image"], torch.full_like(case["image"], 40 / 325))  # HU window -> [-1, 1]


def test_non_ras_input_is_reoriented(tmp_path):
    label = np.zeros((8, 8, 8))
    label[0, 0, 0] = 1
    flipped = np.diag([-2.0, 2.0, 3.0, 1.0])  # x axis points to patient right (LAS)
    folder = write_msd(tmp_path / "s", {"1": "liver"}, [(label * 0, label)], affine=flipped)
    [case] = load_folder(folder, ["liver"], (-325.0, 325.0))
    assert int(case["label"][0, 7, 0, 0]) == 1  # voxel moved to the other end of x


def test_missing_manifest_or_files(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="has no dataset.json"):
        read_site(tmp_path / "empty")
    with pytest.raises(DataError, match="does not exist"):
        read_site(tmp_path / "nowhere")
    folder = write_msd(tmp_path / "s", {"1": "liver"}, [(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)))])
    (folder / "labelsTr" / "c0.nii.gz").unlink()
    with pytest.raises(DataError, match="c0.nii.gz', which does not exist"):
        read_site(folder)


def test_patch_sampler_is_reproducible_and_carries_label_masks(tmp_path):
    rng = np.random.default_rng(0)
    label = np.zeros((24, 24, 24))
    label[8:14, 8:14, 8:14] = 1
    folder = write_msd(tmp_path / "s", {"1": "liver"}, [(rng.normal(0, 50, (24, 24, 24)), label)] * 2)
    cases = load_folder(folder, ["liver", "spleen"], (-325.0, 325.0))
    sampler = PatchSampler((16, 16, 16), foreground_ratio=1.0, batch_size=3)
    first, second = next(sampler.batches(cases, 7)), next(sampler.batches(cases, 7))
    assert first.image.shape == (3, 1, 16, 16, 16) and first.label.dtype == torch.long
    assert torch.equal(first.image, second.image) and torch.equal(first.label, second.label)
    assert first.labelled.tolist() == [[True, False]] * 3
    assert all(int(first.label[i].sum()) > 0 for i in range(3))  # foreground_ratio 1: every patch has organ
    assert not torch.equal(next(sampler.batches(cases, 8)).image, first.image)
