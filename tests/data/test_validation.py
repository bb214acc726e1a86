"""Checks before a study starts that read NIfTI headers only: patch and eval ROI against the smallest volume."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from fedray.config import config_from_data
from fedray.data.federation import check_layout
from fedray.data.validation import resampled_size
from fedray.errors import ConfigError
from tests.conftest import tiny_study

FLIPPED_AND_SWAPPED = np.array([[0.0, -1.5, 0, 10], [2.0, 0, 0, -5], [0, 0, 3.0, 0], [0, 0, 0, 1]])


@pytest.mark.parametrize("affine", [np.diag([1.3, 0.7, 2.5, 1.0]), FLIPPED_AND_SWAPPED])
@pytest.mark.parametrize("spacing", [None, (1.0, 1.0, 1.0), (0.9, 2.0, 1.7)])
def test_the_size_from_the_header_is_what_monai_preprocessing_makes(affine, spacing):
    from monai.data import MetaTensor
    from monai.transforms import Orientation, Spacing

    shape = (33, 31, 17)
    ras = Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))  # as datasets.py
    volume = ras(MetaTensor(torch.zeros(1, *shape), affine=torch.tensor(affine)))
    if spacing is not None:
        volume = Spacing(pixdim=spacing)(volume)
    assert resampled_size(shape, affine, spacing) == tuple(volume.shape[1:])


def write_site(folder, shapes):
    """An MSD folder (liver = 1) whose cases have the given shapes, 2 mm voxels."""
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    training = []
    for i, shape in enumerate(shapes):
        label = np.zeros(shape, np.uint8)
        label[:2, :2, :2] = 1
        nib.save(nib.Nifti1Image(np.zeros(shape, np.int16), np.diag([2.0, 2.0, 2.0, 1.0])), folder / "imagesTr" / f"c{i}.nii.gz")
        nib.save(nib.Nifti1Image(label, np.diag([2.0, 2.0, 2.0, 1.0])), folder / "labelsTr" / f"c{i}.nii.gz")
        training.append({"image": f"./imagesTr/c{i}.nii.gz", "label": f"./labelsTr/c{i}.nii.gz"})
    (folder / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "liver"}, "training": training}))
    return str(folder)


def test_a_patch_or_roi_larger_than_the_smallest_real_volume_is_refused_naming_the_key_and_the_case(tmp_path):
    study = tiny_study(tmp_path)
    del study["federation"]
    study["data"] = {
        "source": "msd", "organs": ["liver"], "cache_dir": str(tmp_path / "data"),
        "sites": [write_site(tmp_path / "big", [(40, 40, 40)]), write_site(tmp_path / "small", [(40, 40, 40), (40, 24, 40)])],
        "test_set": write_site(tmp_path / "test", [(40, 40, 20)]),
        "patch_size": [24, 24, 16],
    }
    study["eval"] = {"roi_size": [20, 20, 20]}

    def layout(**data):
        return check_layout(config_from_data({**study, "data": {**study["data"], **data.pop("data", {})}, **data}))

    layout()  # 24 fits the 24-voxel axis of small/c1; 20 fits the test volume's 20
    with pytest.raises(ConfigError, match=r"data.patch_size \[24, 28, 16\] is larger than case 'c1' of site 'small'") as error:
        layout(data={"patch_size": [24, 28, 16]})
    assert "24 voxels in axis 1" in str(error.value) and "at most [40, 24, 40]" in str(error.value)
    with pytest.raises(ConfigError, match=r"after resampling to data.preprocess.spacing \[4.0, 4.0, 4.0\] mm"):
        layout(data={"preprocess": {"spacing": [4.0, 4.0, 4.0]}})  # 2 mm -> 4 mm: 40 voxels become 20
    with pytest.raises(ConfigError, match=r"eval.roi_size \[20, 20, 24\] is larger than case 'c0' of site 'test'"):
        layout(eval={"roi_size": [20, 20, 24]})


def test_a_phantom_window_larger_than_its_volumes_is_refused_at_load():
    base = {"name": "t", "federation": {"hospitals": [{"organs": ["liver"]}]}}
    with pytest.raises(ConfigError, match=r"eval.roi_size \[64, 64, 64\] is larger than the phantom volumes \(\[64, 64, 48\]"):
        config_from_data({**base, "eval": {"roi_size": [64, 64, 64]}})
