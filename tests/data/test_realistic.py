"""The realistic cohort: deformation, plans and MSD output on a synthetic volume; the real CT via PyPI."""

from __future__ import annotations

import json
import subprocess
import urllib.error
from dataclasses import replace

import nibabel as nib
import numpy as np
import pytest
import torch

from fedray.cli import main
from fedray.data import totalseg
from fedray.data.datasets import load_folder
from fedray.data.msd import read_site
from fedray.data.realistic import (
    CohortSpec,
    _displacement,
    apply_scanner,
    build_cohort,
    deform_case,
    plan_sites,
    site_labels,
)
from fedray.data.phantom import ScannerProfile
from fedray.errors import ConfigError, DataError, DownloadError
from fedray.organs import ORGANS, organ_label

SMALL = CohortSpec(shape=(24, 20, 16), spacing=(6.0, 6.0, 4.0), sites=3, cases_per_site=2, test_cases=2)


@pytest.fixture(scope="module")
def source():
    """A 3 mm synthetic 'CT': soft tissue with one box per study organ, in study label values."""
    image = np.full((40, 36, 16), 40.0, dtype=np.float32)
    label = np.zeros(image.shape, dtype=np.uint8)
    for k, organ in enumerate(ORGANS):
        x = 4 + 5 * k
        label[x : x + 4, 10:26, 3:13] = organ_label(organ)
        image[x : x + 4, 10:26, 3:13] = 100.0 + 10 * k
    return image, label, (3.0, 3.0, 3.0)


def test_deformation_keeps_shape_and_whole_label_values(source):
    image, label, spacing = source
    warped, warped_label = deform_case(np.random.default_rng(0), image, label, spacing, SMALL)
    assert warped.shape == warped_label.shape == SMALL.shape
    assert warped_label.dtype == np.uint8
    assert set(np.unique(warped_label)) <= set(np.unique(label))  # nearest neighbour: no blended values
    assert image.min() - 1e-3 <= warped.min() and warped.max() <= image.max() + 1e-3  # linear: no overshoot


def test_elastic_warp_moves_organs_a_little(source):
    image, label, spacing = source
    rigid = replace(SMALL, deform_mm=0.0)
    # Same seed: same crop, rotation and scale; only the displacement field differs.
    _, straight = deform_case(np.random.default_rng(3), image, label, spacing, rigid)
    _, warped = deform_case(np.random.default_rng(3), image, label, spacing, SMALL)
    fg_a, fg_b = straight > 0, warped > 0
    dice = 2 * (fg_a & fg_b).sum() / (fg_a.sum() + fg_b.sum())
    assert 0.6 < dice < 1.0


def test_displacement_is_smooth_and_bounded():
    spec = CohortSpec(shape=(40, 40, 24), spacing=(4.0, 4.0, 3.0), deform_mm=6.0, smoothness_mm=20.0)
    field = _displacement(np.random.default_rng(1), spec)
    assert field.shape == (3, 40, 40, 24)
    assert 3.0 - 1e-9 <= np.abs(field).max() <= 6.0 + 1e-9
    # Neighbouring voxels move together: the warp folds nothing (gradient well below 1 mm/mm).
    step = max(np.abs(np.diff(field[i], axis=a)).max() / spec.spacing[a] for i in range(3) for a in range(3))
    assert step < 0.5


def test_site_plans_cover_every_organ_with_their_own_numbering():
    plans = plan_sites(CohortSpec(sites=7, max_organs_per_site=2, seed=0))
    assert [p.name for p in plans] == [f"site_{i}" for i in range(7)]
    assert {o for p in plans for o in p.organs} == set(ORGANS)
    for plan in plans:
        assert 1 <= len(plan.organs) <= 2
        values = list(plan.label_values.values())
        assert len(set(values)) == len(values) and all(1 <= v <= len(ORGANS) + 2 for v in values)
    # Numberings differ: some organ carries a value other than its study value somewhere.
    assert any(v != organ_label(o) for p in plans for o, v in p.label_values.items())
    assert plans == plan_sites(CohortSpec(sites=7, max_organs_per_site=2, seed=0))
    assert plans != plan_sites(CohortSpec(sites=7, max_organs_per_site=2, seed=1))


def test_fewer_sites_than_organs_still_label_every_organ():
    plans = plan_sites(CohortSpec(sites=3, max_organs_per_site=1), organs=ORGANS[:5])
    assert {o for p in plans for o in p.organs} == set(ORGANS[:5])
    assert "stomach" not in {o for p in plans for o in p.organs}  # absent from the source: never assigned


def test_site_labels_keep_only_the_sites_organs():
    study = np.array([0, 1, 2, 5, 7], dtype=np.uint8)  # background, liver, spleen, pancreas, gallbladder
    assert site_labels(study, {"spleen": 9, "pancreas": 1}).tolist() == [0, 0, 9, 1, 0]


def test_scanner_is_applied_and_clipped_to_12_bit():
    image = np.array([-2000.0, 0.0, 100.0, 5000.0])
    scanner = ScannerProfile(hu_scale=1.1, hu_offset=10.0, noise_sigma=0.0)
    out = apply_scanner(np.random.default_rng(0), image, scanner)
    assert out.dtype == np.int16 and out.tolist() == [-1024, 10, 120, 3071]


def test_cohort_is_msd_with_partial_labels_and_a_full_test_set(tmp_path, source):
    image, label, spacing = source
    sites, test_dir = build_cohort(tmp_path / "c", image, label, spacing, SMALL, provenance={"credit": "x"})
    assert len(sites) == 3
    for folder, plan in sites:
        site = read_site(folder)
        assert site.organs == plan.organs and len(site.cases) == 2
        assert site.label_names == {0: "background", **{v: o for o, v in plan.label_values.items()}}
        for case in site.cases:
            img = nib.load(case.image)
            values = set(np.unique(np.asarray(nib.load(case.label).dataobj)).tolist())
            assert img.shape == SMALL.shape and np.allclose(img.header.get_zooms(), SMALL.spacing)
            assert values <= {0, *plan.label_values.values()} and len(values) > 1
        loaded = load_folder(folder, ORGANS, (-325.0, 325.0))  # the study's reader maps the numbering
        seen = set(torch.unique(torch.cat([c["label"].flatten() for c in loaded])).tolist())
        assert seen <= {0, *(organ_label(o) for o in plan.organs)}
        assert loaded[0]["labelled"].tolist() == [o in plan.organs for o in ORGANS]
    test = read_site(test_dir)
    assert test.organs == ORGANS and len(test.cases) == 2
    values = set(np.unique(np.asarray(nib.load(test.cases[0].label).dataobj)).tolist())
    assert values == set(range(len(ORGANS) + 1))
    meta = json.loads((test_dir / "dataset.json").read_text())
    assert meta["fedray"]["source"] == {"credit": "x"} and meta["fedray"]["role"] == "test"


def test_cohort_is_deterministic_from_its_seed(tmp_path, source):
    def voxels(root, seed):
        build_cohort(root, *source, replace(SMALL, sites=2, cases_per_site=1, test_cases=1, seed=seed))
        return [np.asarray(nib.load(p).dataobj) for p in sorted(root.glob("*/*Tr/*.nii.gz"))]

    a, b, c = voxels(tmp_path / "a", 0), voxels(tmp_path / "b", 0), voxels(tmp_path / "c", 1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_rebuilding_with_fewer_cases_leaves_no_stale_files(tmp_path, source):
    build_cohort(tmp_path, *source, replace(SMALL, sites=1, cases_per_site=3, test_cases=1))
    build_cohort(tmp_path, *source, replace(SMALL, sites=1, cases_per_site=1, test_cases=1))
    assert len(list((tmp_path / "site_0" / "imagesTr").iterdir())) == 1


def test_bad_sizes_are_config_errors():
    with pytest.raises(ConfigError, match="sites must be >= 1"):
        CohortSpec(sites=0)
    with pytest.raises(ConfigError, match="shape"):
        CohortSpec(shape=(8, 64, 32))


def test_unreachable_pypi_is_a_clear_download_error(tmp_path, monkeypatch, capsys):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(totalseg.urllib.request, "urlopen", offline)
    failed = subprocess.CompletedProcess([], 1, "", "ERROR: No matching distribution")
    monkeypatch.setattr(totalseg, "_pip_download", lambda folder: failed)
    with pytest.raises(DownloadError, match="Could not download totalsegmentator==2.18.0"):
        totalseg.fetch_example(tmp_path / "cache")
    argv = ["data", "realistic", "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 2
    error = " ".join(capsys.readouterr().err.split())  # rich wraps the paragraph
    assert "error: Could not download" in error and "No matching distribution" in error


def test_a_tampered_download_is_refused(tmp_path, monkeypatch):
    def tampered(folder, progress):
        path = folder / totalseg.SDIST_NAME
        path.write_bytes(b"not the sdist")
        return path

    monkeypatch.setattr(totalseg, "_download_sdist", tampered)
    with pytest.raises(DataError, match="refusing to use it"):
        totalseg.fetch_example(tmp_path)


@pytest.fixture(scope="module")
def example_cache(request):
    """The real example files, kept in pytest's cache so the 38 MB sdist is fetched once."""
    cache = request.config.cache.mkdir("totalsegmentator-2.18.0")
    try:
        totalseg.fetch_example(cache)
    except DownloadError as error:
        pytest.skip(f"PyPI unreachable, so TotalSegmentator's example CT cannot be fetched: {error}")
    return cache


@pytest.mark.realdata
def test_real_example_has_every_study_organ_at_the_recorded_values(example_cache):
    example = totalseg.load_example(example_cache)
    assert example.image.shape == example.label.shape == (122, 101, 30)
    assert example.spacing == (3.0, 3.0, 3.0) and example.missing == ()
    counts = {o: int((example.label == organ_label(o)).sum()) for o in ORGANS}
    # Voxel counts of the `total` task's values 1-7 in example_seg.nii.gz.
    assert counts == {"liver": 38634, "spleen": 9452, "kidney_left": 3676, "kidney_right": 3947,
                      "pancreas": 644, "stomach": 4675, "gallbladder": 1333}
    assert -1100 <= example.image.min() and example.image.max() <= 3071


@pytest.mark.realdata
def test_cli_builds_a_tiny_real_cohort(tmp_path, example_cache):
    out = tmp_path / "cohort"
    argv = ["data", "realistic", "--out", str(out), "--cache-dir", str(example_cache), "--sites", "3",
            "--cases", "1", "--test-cases", "1", "--shape", "48", "40", "16", "--spacing", "7", "7", "6"]
    assert main(argv) == 0
    assert (out / "TotalSegmentator-LICENSE.txt").read_text().startswith(" " * 33 + "Apache License")
    labelled = set()
    for folder in sorted(out.glob("site_*")):
        site = read_site(folder)
        meta = json.loads((folder / "dataset.json").read_text())
        label = np.asarray(nib.load(site.cases[0].label).dataobj)
        assert label.shape == (48, 40, 16)
        assert set(np.unique(label).tolist()) == {0, *(int(v) for v in meta["labels"] if v != "0")}
        assert "model prediction" in meta["fedray"]["source"]["credit"]
        labelled |= set(site.organs)
    assert labelled == set(ORGANS)
    test = read_site(out / "test")
    label = np.asarray(nib.load(test.cases[0].label).dataobj)
    assert test.organs == ORGANS and set(np.unique(label).tolist()) == set(range(8))
