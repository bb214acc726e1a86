"""Write a Medical Segmentation Decathlon folder: subfolders, NIfTI case pairs, dataset.json last."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

from fedray.atomic import atomic_write_text


def start_msd_folder(folder: Path) -> Path:
    """Create empty imagesTr/ and labelsTr/; drop a stale dataset.json so a rewrite never looks complete.

    Old case files go too: a rewrite with fewer cases must not leave the extra ones behind.
    """
    (folder / "dataset.json").unlink(missing_ok=True)
    for sub in ("imagesTr", "labelsTr"):
        if (folder / sub).is_dir():
            shutil.rmtree(folder / sub)
        (folder / sub).mkdir(parents=True)
    return folder


def write_msd_case(
    folder: Path, case_id: str, image: np.ndarray, label: np.ndarray, affine: np.ndarray
) -> dict[str, str]:
    """Save one image (int16) / label (uint8) pair on `affine`; return its dataset.json entry."""
    entry = {"image": f"./imagesTr/{case_id}.nii.gz", "label": f"./labelsTr/{case_id}.nii.gz"}
    for array, dtype, relative in (
        (image, np.int16, entry["image"]),
        (label, np.uint8, entry["label"]),
    ):
        nifti = nib.Nifti1Image(array, affine, dtype=dtype)
        nifti.header.set_xyzt_units("mm")
        nifti.set_qform(affine, code=1)  # scanner-anchored coordinates
        nifti.set_sform(affine, code=1)
        nib.save(nifti, folder / relative)
    return entry


def write_msd_manifest(
    folder: Path,
    *,
    name: str,
    description: str,
    labels: dict[str, str],
    training: list[dict[str, str]],
    fedray: dict[str, object],
) -> None:
    """Write an MSD dataset.json (`labels`: value -> name, background added) last and atomically:
    its presence marks the folder complete."""
    manifest = {
        "name": name,
        "description": description,
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {"0": "background", **labels},
        "numTraining": len(training),
        "numTest": 0,
        "training": training,
        "test": [],
        "fedray": fedray,
    }
    atomic_write_text(folder / "dataset.json", json.dumps(manifest, indent=2) + "\n")
