"""Real sites from config: MSD folders and CSV files, label maps, splits, and bad input (tiny NIfTI written here)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import fedray.data.validation as validation
from fedray.config import SiteConfig, config_from_data, load_config, save_config, with_absolute_paths
from fedray.configtypes import to_data
from fedray.data.case_store import Recipe, case_key
from fedray.data.datasets import load_hospital_cases
from fedray.data.federation import check_layout, prepare_hospitals
from fedray.errors import ConfigError, DataError
from fedray.tracking.provenance import data_manifest

SHAPE = (10, 8, 8)  # the smallest patch (8) fits: check_layout refuses a patch larger than a volume
# Not RAS (x points left, y posterior: LPS, as DICOM-derived files often are) and anisotropic.
LPS = np.array([[-0.7, 0, 0, 30.0], [0, -0.9, 0, 20.0], [0, 0, 2.5, -10.0], [0, 0, 0, 1]])
STUDY_ORGANS = ["liver", "spleen"]


def blocks(**values: int) -> np.ndarray:
    """A label volume with value v in slab x = 2k, 2k+1 for the k-th keyword (names are for reading only)."""
    label = np.zeros(SHAPE, dtype=np.uint8)
    for k, value in enumerate(values.values()):
        label[2 * k : 2 * k + 2] = value
    return label


def write_case(folder: Path, name: str, label: np.ndarray, affine=LPS, image=None) -> tuple[str, str]:
    """Write image and label NIfTI files under folder; return their paths relative to folder."""
    image = np.full(label.shape, 50, dtype=np.int16) if image is None else image
    for kind, array in (("images", image), ("labels", label)):
        (folder / kind).mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(array, affine), folder / kind / f"{name}.nii.gz")
    return f"images/{name}.nii.gz", f"labels/{name}.nii.gz"


def write_msd(folder: Path, labels: dict, cases: dict[str, np.ndarray]) -> Path:
    training = [dict(zip(("image", "label"), write_case(folder, name, label))) for name, label in cases.items()]
    (folder / "dataset.json").write_text(json.dumps({"labels": labels, "training": training}))
    return folder


def write_csv(path: Path, cases: dict[str, np.ndarray], subfolders: bool = False) -> Path:
    rows = ["image,label"]
    for name, label in cases.items():
        folder = path.parent / name if subfolders else path.parent
        image, label_path = write_case(folder, "ct" if subfolders else name, label)
        prefix = f"{name}/" if subfolders else ""
        rows.append(f"{prefix}{image},{prefix}{label_path}")
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture
def test_set(tmp_path) -> Path:
    return write_msd(tmp_path / "test", {"0": "background", "1": "liver", "2": "spleen"}, {"t0": blocks(l=1, s=2)})


def study(sites, test_set, **data):
    return config_from_data(
        {
            "name": "real",
            "data": {"source": "msd", "sites": sites, "test_set": str(test_set), "organs": STUDY_ORGANS,
                     "patch_size": [8, 8, 8], **data},
            "eval": {"roi_size": [8, 8, 8]},
        }
    )


def labels_of(case: dict) -> set[int]:
    return set(np.unique(case["label"].numpy()).tolist())


# -- site forms and label maps ---------------------------------------------------------------------


def test_shorthand_string_still_names_an_msd_folder(tmp_path, test_set):
    folder = write_msd(tmp_path / "siteA", {"0": "background", "1": "spleen", "2": "liver"}, {"c0": blocks(s=1, l=2)})
    config = study([str(folder)], test_set)
    assert config.data.sites == (SiteConfig(path=str(folder), format="msd"),)
    prepared = prepare_hospitals(config)
    hospitals, test_dir = prepared  # the old two-value unpacking still works
    [hospital] = hospitals
    assert (hospital.hospital_id, hospital.organs, hospital.num_cases) == ("siteA", ("liver", "spleen"), 1)
    assert hospital.folders == (folder,) and test_dir == test_set and prepared.skipped == ()
    [case] = load_hospital_cases(hospital, config.data)
    label = case["label"][0].numpy()
    # LPS input is reoriented to RAS: x and y flip, so the spleen slab (x 0-1) ends up at x 8-9.
    assert label.shape == SHAPE and label[9, 0, 0] == 2 and label[7, 0, 0] == 1 and label[0, 0, 0] == 0
    assert case["labelled"].tolist() == [True, True]


def test_csv_site_with_paths_relative_to_the_csv(tmp_path, test_set):
    csv = write_csv(tmp_path / "b" / "cases.csv", {"p1": blocks(l=4), "p2": blocks(l=4, x=9)}, subfolders=True)
    config = study([{"path": str(csv), "labels": {4: "liver", 9: None}}], test_set, organs=["liver"])
    assert config.data.sites[0].format == "csv"
    [hospital] = prepare_hospitals(config).hospitals
    assert hospital.hospital_id == "cases" and hospital.organs == ("liver",)
    assert [c.case_id for c in hospital.cases] == ["p1/images/ct", "p2/images/ct"]  # same file name, distinct cases
    loaded = load_hospital_cases(hospital, config.data)
    assert [labels_of(c) for c in loaded] == [{0, 1}, {0, 1}]  # 4 -> liver (index 1); 9 (null) -> background
    assert hospital.folders == (csv,) and csv in hospital.files


def test_label_map_overrides_dataset_json(tmp_path, test_set):
    folder = write_msd(tmp_path / "s", {"0": "background", "1": "spleen", "2": "liver"}, {"c0": blocks(a=1, b=2)})
    config = study([{"path": str(folder), "name": "renamed", "labels": {1: "liver", 2: None}}], test_set,
                   organs=["liver"])
    [hospital] = prepare_hospitals(config).hospitals
    assert hospital.hospital_id == "renamed" and hospital.organs == ("liver",)
    [case] = load_hospital_cases(hospital, config.data)
    label = case["label"][0].numpy()
    assert label[9, 0, 0] == 1 and label[7, 0, 0] == 0  # dataset.json's "spleen" value 1 is liver here
    assert case["labelled"].tolist() == [True]


def test_two_sites_numbering_differently_meet_in_global_names(tmp_path, test_set):
    msd = write_msd(tmp_path / "a", {"0": "background", "1": "liver", "2": "spleen"}, {"a0": blocks(l=1, s=2)})
    csv = write_csv(tmp_path / "b" / "b.csv", {"b0": blocks(l=7, s=3)})
    sites = [str(msd), {"path": str(csv), "labels": {3: "spleen", 7: "liver"}}]
    for pooled in (False, True):
        config = config_from_data({**to_data(study(sites, test_set)), "federation": {"pooled": pooled}})
        hospitals = prepare_hospitals(config).hospitals
        assert [h.hospital_id for h in hospitals] == (["pooled"] if pooled else ["a", "b"])
        loaded = [case for h in hospitals for case in load_hospital_cases(h, config.data)]
        first, second = (c["label"][0].numpy() for c in loaded)
        assert np.array_equal(first, second)  # same anatomy, same global indices, different site numbering


def test_declared_organs_limit_training_and_are_checked(tmp_path, test_set):
    folder = write_msd(tmp_path / "s", {"1": "liver", "2": "spleen"}, {"c0": blocks(l=1, s=2)})
    config = study([{"path": str(folder), "organs": ["liver"]}, str(write_msd(tmp_path / "t", {"2": "spleen"},
                   {"c0": blocks(x=0, s=2)}))], test_set)
    hospitals = prepare_hospitals(config).hospitals
    assert [h.organs for h in hospitals] == [("liver",), ("spleen",)]
    [case] = load_hospital_cases(hospitals[0], config.data)
    assert labels_of(case) == {0, 1} and case["labelled"].tolist() == [True, False]  # spleen: not annotated here
    with pytest.raises(DataError, match="declares pancreas, but its label map has no value"):
        prepare_hospitals(study([{"path": str(folder), "organs": ["pancreas"]}, str(folder)], test_set))


@pytest.mark.parametrize(
    ("site", "message"),
    [
        ({"path": "x", "labels": {1: "livr"}}, "unknown organ 'livr'. Did you mean 'liver'?"),
        ({"path": "x", "organs": ["spleen "]}, "Did you mean 'spleen'?"),
        ({"path": "x", "labels": {1: "liver"}, "organs": ["spleen"]}, "declares spleen, but labels maps no value"),
        ({"path": "x", "labels": {"one": "liver"}}, "label value 'one' must be a whole number"),
        ({"path": "x.csv"}, "a CSV site needs a labels map"),
        ({"path": "x", "split": 0}, "split must be >= 1"),
        ({"path": "x", "fromat": "csv"}, "Did you mean 'format'?"),
        ({"path": "x", "format": "nifti"}, "must be one of msd, csv"),
    ],
)
def test_bad_site_config(site, message, tmp_path):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("?", r"\?")):
        study([site], tmp_path)


def test_site_config_round_trips_through_yaml(tmp_path, test_set):
    config = study([{"path": "rel/site", "labels": {"1": "liver", 2: None}, "split": 2}, "other"], test_set,
                   on_bad_case="skip")
    assert config.data.sites[0].labels == {1: "liver", 2: None} and config.data.on_bad_case == "skip"
    save_config(config, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == config
    absolute = with_absolute_paths(config)
    assert all(Path(s.path).is_absolute() for s in absolute.data.sites)
    assert absolute.data.sites[0].labels == {1: "liver", 2: None}


# -- split into hospitals --------------------------------------------------------------------------


def test_split_is_deterministic_disjoint_and_covering(tmp_path, test_set):
    cases = {f"c{i}": blocks(l=1, s=2) for i in range(7)}
    folder = write_msd(tmp_path / "big", {"1": "liver", "2": "spleen"}, cases)
    config = study([{"path": str(folder), "split": 3}], test_set)
    hospitals = prepare_hospitals(config).hospitals
    assert [h.hospital_id for h in hospitals] == ["big-0", "big-1", "big-2"]
    assert [h.index for h in hospitals] == [0, 1, 2]
    assert sorted(h.num_cases for h in hospitals) == [2, 2, 3]
    ids = [c.case_id for h in hospitals for c in h.cases]
    assert sorted(ids) == sorted(cases)  # disjoint and covering
    assert hospitals == prepare_hospitals(config).hospitals  # same split every time

    # The split follows the case ids, not the listing order.
    meta = json.loads((folder / "dataset.json").read_text())
    meta["training"].reverse()
    (folder / "dataset.json").write_text(json.dumps(meta))
    again = prepare_hospitals(config).hospitals
    assert [{c.case_id for c in h.cases} for h in again] == [{c.case_id for c in h.cases} for h in hospitals]

    with pytest.raises(DataError, match="too few to split into 8 hospitals"):
        prepare_hospitals(study([{"path": str(folder), "split": 8}], test_set))
    many = prepare_hospitals(study([{"path": str(folder), "split": 7, "name": "h"}], test_set)).hospitals
    assert [h.hospital_id for h in many][:2] == ["h-0", "h-1"] and len(many) == 7


# -- bad input --------------------------------------------------------------------------------------


def _corrupt(path: Path) -> None:
    path.write_bytes(b"this is not a NIfTI file")


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # header still readable; the voxels are cut off


def _rewrite(path: Path, array=None, affine=None) -> None:
    old = nib.load(path)
    array = np.asanyarray(old.dataobj) if array is None else array
    nib.save(nib.Nifti1Image(array, old.affine if affine is None else affine), path)


def _shifted(affine: np.ndarray) -> np.ndarray:
    moved = affine.copy()
    moved[0, 3] += 5.0
    return moved


def _nan_image(path: Path, value: float) -> None:
    image = np.full(SHAPE, 50.0, dtype=np.float32)
    image[1, 2, 3] = value
    _rewrite(path, image)


BAD_CASES = {
    "unreadable": ("image", _corrupt, "cannot be read as NIfTI"),
    "truncated": ("image", lambda p: (_rewrite(p, np.random.default_rng(0).normal(size=SHAPE).astype(np.float32)),
                                      _truncate(p)), "cannot be read in full"),
    "shape": ("label", lambda p: _rewrite(p, np.zeros((10, 8, 5), np.uint8)), "has shape"),
    "affine": ("label", lambda p: _rewrite(p, affine=_shifted(LPS)), "different affine"),
    "unmapped value": ("label", lambda p: _rewrite(p, blocks(l=1, s=2, x=5)), r"label value\(s\) 5 that are not"),
    "empty organ": ("label", lambda p: _rewrite(p, blocks(l=1)), "has no spleen voxels, but site 's' declares"),
    "missing": ("label", Path.unlink, r"does not exist \(listed in"),
    "nan": ("image", lambda p: _nan_image(p, np.nan), "1 NaN or infinite voxel"),
    "inf": ("image", lambda p: _nan_image(p, np.inf), "1 NaN or infinite voxel"),
    "float label": ("label", lambda p: _rewrite(p, blocks(l=1, s=2).astype(np.float32) * 0.5 + 0.5),
                    "fractional values"),
}


@pytest.mark.parametrize("kind", list(BAD_CASES))
def test_bad_case_fails_naming_the_file_or_is_skipped_and_reported(kind, tmp_path, test_set):
    which, damage, reason = BAD_CASES[kind]
    folder = write_msd(tmp_path / "s", {"1": "liver", "2": "spleen"}, {f"c{i}": blocks(l=1, s=2) for i in range(3)})
    bad_file = folder / f"{which}s" / "c1.nii.gz"
    damage(bad_file)
    with pytest.raises(DataError, match=reason) as failure:
        prepare_hospitals(study([str(folder)], test_set))
    message = str(failure.value)
    assert f"Bad case 'c1' of site 's': '{bad_file}'" in message and "data.on_bad_case=skip" in message
    assert "\n" not in message

    prepared = prepare_hospitals(study([str(folder)], test_set, on_bad_case="skip"))
    [hospital] = prepared.hospitals
    assert [c.case_id for c in hospital.cases] == ["c0", "c2"]
    [skipped] = prepared.skipped
    assert skipped.as_dict().keys() == {"site", "case", "file", "reason"}
    assert (skipped.site, skipped.case, skipped.file) == ("s", "c1", str(bad_file))
    assert len(load_hospital_cases(hospital, study([str(folder)], test_set).data)) == 2


def test_csv_bad_case_is_named_too(tmp_path, test_set):
    csv = write_csv(tmp_path / "c" / "list.csv", {"a": blocks(l=1), "b": blocks(l=1)})
    (tmp_path / "c" / "images" / "b.nii.gz").unlink()
    site = {"path": str(csv), "labels": {1: "liver"}}
    with pytest.raises(DataError, match=r"images/b.nii.gz' does not exist \(listed in '.*list.csv'\)"):
        prepare_hospitals(study([site, str(write_msd(tmp_path / "sp", {"2": "spleen"}, {"x": blocks(s=2)}))], test_set))


def test_site_with_no_cases_is_an_error_either_way(tmp_path, test_set):
    empty_csv = tmp_path / "empty.csv"
    empty_csv.write_text("image,label\n")
    empty_msd = tmp_path / "m"
    empty_msd.mkdir()
    (empty_msd / "dataset.json").write_text(json.dumps({"labels": {"1": "liver"}, "training": []}))
    all_bad = write_msd(tmp_path / "bad", {"1": "liver", "2": "spleen"}, {"c0": blocks(l=1, s=2)})
    _corrupt(all_bad / "labels" / "c0.nii.gz")
    for mode in ("fail", "skip"):
        with pytest.raises(DataError, match="empty.csv' lists no cases"):
            prepare_hospitals(study([{"path": str(empty_csv), "labels": {1: "liver"}}], test_set, on_bad_case=mode))
        with pytest.raises(DataError, match="dataset.json' lists no training cases"):
            prepare_hospitals(study([str(empty_msd)], test_set, on_bad_case=mode))
    with pytest.raises(DataError, match="Site 'bad' .* has no usable cases: all 1 were left out"):
        prepare_hospitals(study([str(all_bad)], test_set, on_bad_case="skip"))


def test_layout_is_checked_without_reading_a_case(tmp_path, test_set):
    # Corrupt files: only the case checks of prepare_hospitals read them, check_layout must not.
    liver_only = write_msd(tmp_path / "a", {"1": "liver"}, {"c0": blocks(l=1), "c1": blocks(l=1)})
    both = write_msd(tmp_path / "b", {"1": "liver", "2": "spleen"}, {"c0": blocks(l=1, s=2)})
    for folder in (liver_only, both):
        for path in (folder / "labels").iterdir():
            _corrupt(path)
    check_layout(study([str(liver_only), str(both)], test_set))  # nothing wrong that a listing shows
    with pytest.raises(DataError, match="c0.nii.gz"):
        prepare_hospitals(study([str(liver_only), str(both)], test_set))
    with pytest.raises(ConfigError, match="No hospital labels spleen"):
        check_layout(study([str(liver_only)], test_set))
    with pytest.raises(ConfigError, match="a-0 appear more than once"):
        check_layout(study([{"path": str(liver_only), "split": 2}, {"path": str(both), "name": "a-0"}], test_set))


def test_bad_csv_layout(tmp_path, test_set):
    csv = tmp_path / "x.csv"
    csv.write_text("img,label\na,b\n")
    with pytest.raises(DataError, match="has no column image"):
        prepare_hospitals(study([{"path": str(csv), "labels": {1: "liver"}}], test_set))
    twice = write_csv(tmp_path / "d" / "twice.csv", {"a": blocks(l=1)})
    twice.write_text(twice.read_text().replace(",", ", ") + twice.read_text().splitlines()[1] + "\n")
    with pytest.raises(DataError, match="lists case images/a more than once"):  # "image, label" header is fine
        prepare_hospitals(study([{"path": str(twice), "labels": {1: "liver"}}], test_set))
    with pytest.raises(DataError, match="Site CSV file .* does not exist"):
        prepare_hospitals(study([{"path": str(tmp_path / "nope.csv"), "labels": {1: "liver"}}], test_set))


def test_bad_test_case_always_stops_the_study(tmp_path, test_set):
    site = write_msd(tmp_path / "s", {"1": "liver", "2": "spleen"}, {"c0": blocks(l=1, s=2)})
    _nan_image(test_set / "images" / "t0.nii.gz", np.nan)
    with pytest.raises(DataError, match="t0.nii.gz' has 1 NaN"):
        prepare_hospitals(study([str(site)], test_set, on_bad_case="skip"))


# -- checks remembered between starts ---------------------------------------------------------------


def write_plain_msd(folder: Path, labels: dict, cases: dict[str, np.ndarray]) -> Path:
    """An MSD folder of uncompressed .nii files, so a test can change voxels in place (same size)."""
    training = []
    for name, label in cases.items():
        for kind, array in (("images", np.full(label.shape, 50, dtype=np.int16)), ("labels", label)):
            (folder / kind).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(array, LPS), folder / kind / f"{name}.nii")
        training.append({"image": f"images/{name}.nii", "label": f"labels/{name}.nii"})
    (folder / "dataset.json").write_text(json.dumps({"labels": labels, "training": training}))
    return folder


def _overwrite_keeping_stamp(path: Path, offset: int, data: bytes) -> None:
    """Change bytes in place and restore the modification time: size and mtime say 'unchanged'."""
    before = path.stat()
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def _touch(path: Path) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))


def test_a_case_that_passed_has_only_its_headers_read_until_its_file_changes(tmp_path, test_set, monkeypatch):
    folder = write_plain_msd(tmp_path / "s", {"1": "liver", "2": "spleen"}, {f"c{i}": blocks(l=1, s=2) for i in range(2)})
    config = study([str(folder)], test_set, cache_dir=str(tmp_path / "cache"))
    full_reads = []
    voxel_problem = validation._voxel_problem
    monkeypatch.setattr(validation, "_voxel_problem", lambda case, *a: full_reads.append(case.case_id) or voxel_problem(case, *a))

    prepare_hospitals(config)
    assert sorted(full_reads) == ["c0", "c1", "t0"]  # every case read in full once, the test set's too
    assert len(list((tmp_path / "cache" / validation.CHECKS_FOLDER).iterdir())) == 3

    # Voxel [0, 0, 0] of c1's label (liver, 1) becomes 5, a value outside the map; the stamp stays.
    label = folder / "labels" / "c1.nii"
    _overwrite_keeping_stamp(label, nib.load(label).dataobj.offset, bytes([5]))
    full_reads.clear()
    [hospital] = prepare_hospitals(config).hospitals
    assert full_reads == [] and [c.case_id for c in hospital.cases] == ["c0", "c1"]  # headers only

    _touch(label)  # a new stamp: read in full again, and the new problem reported as before
    with pytest.raises(DataError, match=r"Bad case 'c1' of site 's': '.*c1.nii' holds label value\(s\) 5 that are not"):
        prepare_hospitals(config)
    assert full_reads == ["c1"]
    [skipped] = prepare_hospitals(study([str(folder)], test_set, cache_dir=str(tmp_path / "cache"),
                                        on_bad_case="skip")).skipped
    assert (skipped.case, skipped.file) == ("c1", str(label))  # a bad case is not remembered as passed


def test_a_remembered_case_still_has_its_headers_checked(tmp_path, test_set):
    folder = write_plain_msd(tmp_path / "s", {"1": "liver", "2": "spleen"}, {f"c{i}": blocks(l=1, s=2) for i in range(2)})
    config = study([str(folder)], test_set, cache_dir=str(tmp_path / "cache"))
    prepare_hospitals(config)
    image = folder / "images" / "c0.nii"
    _overwrite_keeping_stamp(image, 344, b"zzzz")  # the magic "n+1": no longer a NIfTI header
    with pytest.raises(DataError, match=r"Bad case 'c0' of site 's': '.*c0.nii' cannot be read as NIfTI"):
        prepare_hospitals(config)
    image.unlink()
    with pytest.raises(DataError, match=r"c0.nii' does not exist"):
        prepare_hospitals(config)


def test_a_label_map_change_the_store_key_does_not_show_is_checked_again(tmp_path, test_set):
    # Values 3 and 4 are known and not trained on: the store key (the study's lookup table) is the same
    # whether or not 3 is listed, but a label file holding 3 is bad input only when it is not.
    label = blocks(l=1, s=2, other=3)
    folder = write_msd(tmp_path / "s", {"1": "liver", "2": "spleen"}, {"c0": label, "c1": blocks(l=1, s=2)})
    cache = str(tmp_path / "cache")
    known = study([{"path": str(folder), "labels": {1: "liver", 2: "spleen", 3: None, 4: None}}], test_set, cache_dir=cache)
    unknown = study([{"path": str(folder), "labels": {1: "liver", 2: "spleen", 4: None}}], test_set, cache_dir=cache)
    [hospital] = prepare_hospitals(known).hospitals
    case = hospital.cases[0]
    [other] = [c for c in check_layout(unknown).sites[0][1].cases if c.case_id == case.case_id]
    assert case_key(case, Recipe.of(known.data)) == case_key(other, Recipe.of(unknown.data))
    with pytest.raises(DataError, match=r"Bad case 'c0' of site 's': .* holds label value\(s\) 3 that are not"):
        prepare_hospitals(unknown)


# -- provenance -------------------------------------------------------------------------------------


def test_manifest_hashes_each_hospitals_files(tmp_path, test_set):
    folder = write_msd(tmp_path / "s", {"1": "liver", "2": "spleen"}, {f"c{i}": blocks(l=1, s=2) for i in range(2)})
    config = study([{"path": str(folder), "split": 2}], test_set)

    def manifest():
        hospitals = prepare_hospitals(config).hospitals
        return data_manifest({h.hospital_id: h.files for h in hospitals}, test_set)

    before = manifest()
    assert set(before["hospitals"]) == {"s-0", "s-1"} and before["test"]
    label = next(c.label for c in prepare_hospitals(config).hospitals[0].cases)
    _rewrite(label, blocks(s=2, l=1))  # same values, other places
    after = manifest()
    assert after["hospitals"]["s-0"] != before["hospitals"]["s-0"]
    assert after["hospitals"]["s-1"] == before["hospitals"]["s-1"] and after["study"] != before["study"]


def test_phantom_hospitals_carry_their_cases(tmp_path):
    config = config_from_data(
        {
            "name": "p",
            "data": {"cache_dir": str(tmp_path), "organs": ["liver"], "patch_size": [16, 16, 16],
                     "phantom": {"shape": [16, 16, 16], "test_cases": 1}},
            "federation": {"hospitals": [{"name": "x", "organs": ["liver"], "cases": 2}]},
            "eval": {"roi_size": [16, 16, 16]},
        }
    )
    [hospital] = prepare_hospitals(config).hospitals
    assert hospital.num_cases == 2 and hospital.organs == ("liver",) and len(hospital.files) == 5
    cases = load_hospital_cases(hospital, config.data)
    assert [labels_of(c) for c in cases] == [{0, 1}, {0, 1}]
