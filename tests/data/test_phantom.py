"""The synthetic CT phantom: MSD layout on disk, partial labels, anatomy, determinism, scanners."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fedray.data.phantom import (
    PhantomSpec,
    ScannerProfile,
    generate_case,
    scanner_for_site,
    write_site,
    write_test_set,
)
from fedray.errors import ConfigError
from fedray.organs import ORGANS, organ_label

SMALL = PhantomSpec(
    shape=(48, 48, 32), spacing=(8.0, 6.667, 7.5)
)  # same field of view, fewer voxels
TARGET_HU = {"liver": 100, "spleen": 110, "kidney_left": 170, "kidney_right": 170, "pancreas": 90}
MIN_VOXELS_DEFAULT = 40  # at the default 64x64x48 grid


def load_site(folder: Path) -> tuple[dict, list[tuple[nib.Nifti1Image, nib.Nifti1Image]]]:
    meta = json.loads((folder / "dataset.json").read_text())
    pairs = [
        (nib.load(folder / e["image"]), nib.load(folder / e["label"])) for e in meta["training"]
    ]
    return meta, pairs


def arrays(folder: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    _, pairs = load_site(folder)
    return [(np.asanyarray(i.dataobj), np.asanyarray(l.dataobj)) for i, l in pairs]


def test_site_folder_holds_only_its_organs(tmp_path):
    folder = write_site(
        tmp_path / "h0",
        ["spleen", "liver"],
        3,
        seed=0,
        site_index=0,
        scanner=ScannerProfile(noise_sigma=10.0),
    )
    meta, pairs = load_site(folder)

    assert meta["numTraining"] == 3 and meta["numTest"] == 0 and meta["test"] == []
    assert meta["tensorImageSize"] == "3D" and meta["modality"] == {"0": "CT"}
    assert meta["labels"] == {"0": "background", "1": "liver", "2": "spleen"}
    assert [e["image"] for e in meta["training"]] == [
        f"./imagesTr/site_000_{i:03d}.nii.gz" for i in range(3)
    ]
    assert meta["fedray"]["organs"] == ["liver", "spleen"]
    assert meta["fedray"]["generator"] == "phantom" and meta["fedray"]["site_index"] == 0
    assert meta["fedray"]["scanner"] == {"hu_scale": 1.0, "hu_offset": 0.0, "noise_sigma": 10.0}
    assert sorted(p.name for p in folder.iterdir()) == ["dataset.json", "imagesTr", "labelsTr"]

    for image_file, label_file in pairs:
        image, label = np.asanyarray(image_file.dataobj), np.asanyarray(label_file.dataobj)
        assert image.dtype == np.int16 and label.dtype == np.uint8
        assert image.shape == label.shape == (64, 64, 48)
        assert set(np.unique(label)) == {0, 1, 2}
        for nifti in (image_file, label_file):
            assert nib.aff2axcodes(nifti.affine) == ("R", "A", "S")
            assert np.allclose(nifti.header.get_zooms(), (6.0, 5.0, 5.0))
            assert np.allclose(
                nifti.affine[:3, 3], -(np.array([64, 64, 48]) - 1) / 2 * [6.0, 5.0, 5.0]
            )
            assert nifti.header.get_xyzt_units()[0] == "mm"
        assert (image <= -950).mean() > 0.1  # air around the body
        assert image.max() > 300  # spine
        for organ in ("liver", "spleen"):
            assert abs(image[label == organ_label(organ)].mean() - TARGET_HU[organ]) < 15


def test_unlabelled_organs_are_background_but_still_imaged(tmp_path):
    # Same site, two label sets: images identical, and kidney voxels exist only where labelled.
    only_liver = arrays(write_site(tmp_path / "a", ["liver"], 1, seed=5, site_index=2, spec=SMALL))[
        0
    ]
    kidneys = arrays(
        write_site(tmp_path / "b", ["kidney_left", "liver"], 1, seed=5, site_index=2, spec=SMALL)
    )[0]
    assert np.array_equal(only_liver[0], kidneys[0])
    assert set(np.unique(only_liver[1])) == {0, 1}
    kidney = kidneys[1] == organ_label("kidney_left")
    assert kidney.sum() > 100 and np.all(only_liver[1][kidney] == 0)
    assert (
        abs(only_liver[0][kidney].mean() - 170) < 30
    )  # the organ is in the image, just not labelled


def test_test_set_labels_every_organ_in_every_case(tmp_path):
    folder = write_test_set(tmp_path / "test", 3, seed=0)
    meta, pairs = load_site(folder)
    assert meta["fedray"]["role"] == "test" and meta["fedray"]["organs"] == list(ORGANS)
    assert meta["labels"] == {"0": "background", **{str(organ_label(o)): o for o in ORGANS}}
    assert len({json.dumps(s, sort_keys=True) for s in meta["fedray"]["scanners"].values()}) == 3
    for _, label_file in pairs:
        counts = np.bincount(np.asanyarray(label_file.dataobj).ravel(), minlength=len(ORGANS) + 1)
        assert len(counts) == len(ORGANS) + 1
        assert all(counts[organ_label(o)] >= MIN_VOXELS_DEFAULT for o in ORGANS), counts


def test_generate_case_anatomy():
    scanner = ScannerProfile(noise_sigma=0.0)
    for seed in range(8):
        image, label = generate_case(np.random.default_rng(seed), PhantomSpec(), scanner)
        assert image.shape == label.shape == (64, 64, 48)
        assert image.dtype == np.int16 and label.dtype == np.uint8
        counts = {o: int((label == organ_label(o)).sum()) for o in ORGANS}
        assert set(np.unique(label)) == set(range(len(ORGANS) + 1))
        assert min(counts.values()) >= MIN_VOXELS_DEFAULT, counts
        assert max(counts, key=counts.get) == "liver"
        assert set(sorted(counts, key=counts.get)[:2]) == {"gallbladder", "pancreas"}
        for organ, hu in TARGET_HU.items():
            assert abs(image[label == organ_label(organ)].mean() - hu) < 15
        # RAS+: the liver is on the patient's right (+x), the spleen on the left, kidneys posterior.
        centre = {
            o: np.argwhere(label == organ_label(o)).mean(axis=0) - (np.array(label.shape) - 1) / 2
            for o in ORGANS
        }
        assert centre["liver"][0] > 0 > centre["spleen"][0]
        assert centre["kidney_right"][0] > 0 > centre["kidney_left"][0]
        assert centre["kidney_left"][1] < 0 and centre["gallbladder"][1] > 0
        # Air outside a body that touches neither in-plane border.
        assert np.all(image[0] == -1000) and np.all(image[:, 0] == -1000)


def test_same_arguments_give_identical_data(tmp_path):
    kwargs = {"seed": 3, "site_index": 1, "spec": SMALL}
    first = arrays(write_site(tmp_path / "a", ["liver"], 2, **kwargs))
    second = arrays(write_site(tmp_path / "b", ["liver"], 2, **kwargs))
    other_site = arrays(write_site(tmp_path / "c", ["liver"], 2, seed=3, site_index=2, spec=SMALL))
    for (image, label), (image2, label2), (image3, _) in zip(first, second, other_site):
        assert np.array_equal(image, image2) and np.array_equal(label, label2)
        assert not np.array_equal(image, image3)
    assert not np.array_equal(first[0][0], first[1][0])  # cases within a site differ too


def test_hospital_data_does_not_depend_on_other_hospitals(tmp_path):
    for index in range(3):
        write_site(
            tmp_path / f"many_{index}", [ORGANS[index]], 1, seed=7, site_index=index, spec=SMALL
        )
    after_others = arrays(
        write_site(tmp_path / "many_3", ["liver"], 2, seed=7, site_index=3, spec=SMALL)
    )
    alone = arrays(write_site(tmp_path / "alone", ["liver"], 2, seed=7, site_index=3, spec=SMALL))
    for (image, label), (image2, label2) in zip(after_others, alone):
        assert np.array_equal(image, image2) and np.array_equal(label, label2)


def test_rewriting_a_folder_replaces_it(tmp_path):
    folder = write_site(tmp_path / "h", ["liver"], 2, seed=0, site_index=0, spec=SMALL)
    write_site(folder, ["spleen"], 2, seed=0, site_index=0, spec=SMALL)
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["fedray"]["organs"] == ["spleen"]
    assert all(set(np.unique(label)) == {0, 2} for _, label in arrays(folder))
    assert not list(folder.glob("*.tmp"))


def test_rewriting_with_fewer_cases_leaves_no_stale_files(tmp_path):
    folder = write_site(tmp_path / "h", ["liver"], 3, seed=0, site_index=0, spec=SMALL)
    write_site(folder, ["liver"], 1, seed=0, site_index=0, spec=SMALL)
    assert [p.name for p in (folder / "imagesTr").iterdir()] == ["site_000_000.nii.gz"]
    assert [p.name for p in (folder / "labelsTr").iterdir()] == ["site_000_000.nii.gz"]


def test_sites_differ_in_scanner_and_hu(tmp_path):
    profiles = [scanner_for_site(0, i) for i in range(6)]
    assert scanner_for_site(0, 1) == profiles[1]  # deterministic
    assert len(set(profiles)) == 6
    for p in profiles:
        assert 0.9 <= p.hu_scale <= 1.1 and -20 <= p.hu_offset <= 20 and 8 <= p.noise_sigma <= 30

    # Pick two sites whose calibration moves liver HU apart by a clear margin.
    liver_hu = {i: 100 * p.hu_scale + p.hu_offset for i, p in enumerate(profiles)}
    low, high = min(liver_hu, key=liver_hu.get), max(liver_hu, key=liver_hu.get)
    assert liver_hu[high] - liver_hu[low] > 10
    measured = {}
    for index in (low, high):
        meta, _ = load_site(
            write_site(tmp_path / f"s{index}", ["liver"], 2, seed=0, site_index=index, spec=SMALL)
        )
        assert meta["fedray"]["scanner"] == vars(profiles[index])
        measured[index] = np.mean(
            [image[label == 1].mean() for image, label in arrays(tmp_path / f"s{index}")]
        )
    assert measured[high] - measured[low] == pytest.approx(liver_hu[high] - liver_hu[low], abs=8)


def test_unknown_organ_suggests_the_right_name(tmp_path):
    with pytest.raises(ConfigError, match="liver"):
        write_site(tmp_path / "h", ["livr"], 1, seed=0, site_index=0)
    assert not (tmp_path / "h").exists()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"organs": ["liver"], "n_cases": 0},
        {"organs": [], "n_cases": 1},
        {"organs": ["liver"], "n_cases": 1, "site_index": -1},
    ],
)
def test_bad_site_arguments(tmp_path, kwargs):
    with pytest.raises(ConfigError):
        write_site(tmp_path / "h", **{"seed": 0, "site_index": 0, **kwargs})


def test_test_set_needs_a_case(tmp_path):
    with pytest.raises(ConfigError):
        write_test_set(tmp_path / "t", 0, seed=0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"shape": (64, 64, 8)}, "shape"),
        ({"shape": (64, 64)}, "shape"),
        ({"spacing": (1.0, 0.0, 1.0)}, "spacing"),
    ],
)
def test_bad_spec(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        PhantomSpec(**kwargs)


def test_default_field_of_view():
    spec = PhantomSpec()
    assert tuple(n * s for n, s in zip(spec.shape, spec.spacing)) == (384.0, 320.0, 240.0)
    assert PhantomSpec(shape=[64, 64, 48], spacing=[6, 5, 5]) == spec  # lists and ints normalised
