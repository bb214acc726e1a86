"""The case store: one folder per preprocessed case, exactly as the MONAI chain made it, redone when an input changes."""

from __future__ import annotations

import json
import mmap
import os
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import fedray.data.case_store as case_store
import fedray.data.datasets as datasets
from fedray.config import config_from_data, with_absolute_paths
from fedray.data.case_store import (
    Recipe,
    check_fits_memory,
    foreground_locations,
    is_stored,
    open_case,
    store_root,
    stored_cases,
)
from fedray.data.datasets import ensure_stored, load_cases, load_hospital_cases
from fedray.data.federation import prepare_hospitals
from fedray.errors import DataError
from tests.conftest import tiny_study


@pytest.fixture
def study(tmp_path):
    config = with_absolute_paths(config_from_data(tiny_study(tmp_path)))
    return config, prepare_hospitals(config).hospitals[0]


def _in_memory(hospital, data) -> list[dict]:
    return load_cases(hospital.cases, data.organs, data.hu_window, data.preprocess)  # no store


def test_a_stored_case_is_the_chains_output_and_is_read_back_without_preprocessing(study, monkeypatch):
    config, hospital = study
    expected = _in_memory(hospital, config.data)
    stored = load_hospital_cases(hospital, config.data)
    assert len(list(store_root(config.data).iterdir())) == hospital.num_cases
    for mine, theirs in zip(stored, expected):
        for key in ("image", "label", "original_label", "affine", "original_affine", "labelled"):
            assert mine[key].dtype == theirs[key].dtype and torch.equal(mine[key], theirs[key]), key
        assert mine["case_id"] == theirs["case_id"]

    def no_preprocessing(*args, **kwargs):
        raise AssertionError("preprocessed again")

    monkeypatch.setattr(datasets, "CacheDataset", no_preprocessing)
    again = load_hospital_cases(hospital, config.data)  # from the store alone
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(again, stored))

    image = hospital.cases[0].image
    os.utime(image, ns=(os.stat(image).st_atime_ns, os.stat(image).st_mtime_ns + 10**9))  # the file was edited
    with pytest.raises(AssertionError, match="preprocessed again"):
        load_hospital_cases(hospital, config.data)
    window = replace(config.data, hu_window=(-100.0, 200.0))  # other preprocessing: another key
    with pytest.raises(AssertionError, match="preprocessed again"):
        load_hospital_cases(hospital, window)


def test_training_view_is_memory_mapped_with_each_organs_foreground(study):
    config, hospital = study
    recipe = Recipe.of(config.data)
    [ref, *_] = [ensure_stored(ref, recipe) for ref in stored_cases(hospital, config.data)]
    case = open_case(ref)
    owner = case.image
    while isinstance(owner, np.ndarray | memoryview):
        owner = owner.base if isinstance(owner, np.ndarray) else owner.obj
    assert isinstance(owner, mmap.mmap) and not case.image.flags.writeable  # pages read as patches touch them
    for name, mapped in ("image", case.image), ("label", case.label), ("foreground", case.foreground):
        assert np.array_equal(mapped, np.load(ref.folder / f"{name}.npy"))  # as np.load reads it
    assert case.image.dtype == np.float32 and case.label.dtype == np.uint8
    label = np.asarray(case.label)
    assert np.array_equal(np.sort(case.foreground), np.flatnonzero(label))  # every labelled voxel, once
    offsets = np.load(ref.folder / "foreground_offsets.npy")
    for organ in range(1, len(config.data.organs) + 1):  # organ k's run holds exactly its voxels
        run = case.foreground[offsets[organ - 1]:offsets[organ]]
        assert np.array_equal(run, np.flatnonzero(label == organ))
    assert case.labelled.tolist() == [o in hospital.organs for o in config.data.organs]
    meta = json.loads((ref.folder / "case.json").read_text())
    assert meta["shape"] == list(label.shape) and meta["store_version"] == case_store.STORE_VERSION


def test_foreground_locations_by_hand():
    label = np.array([[0, 2, 1], [1, 0, 2]], dtype=np.uint8)  # flat: 0 2 1 1 0 2
    index, offsets = foreground_locations(label, 3)
    assert index.tolist() == [2, 3, 1, 5] and offsets.tolist() == [0, 2, 4, 4]  # organ 3: no voxel


def test_a_case_too_large_for_the_memory_available_is_refused_before_loading(study, monkeypatch):
    config, hospital = study
    case = hospital.cases[0]
    with pytest.raises(DataError, match=r"preprocessing needs about .* GiB .* only 0.0 GiB of memory is available"):
        check_fits_memory(case, available=1000)
    monkeypatch.setattr(case_store, "available_memory", lambda: 1000)
    monkeypatch.setattr(datasets, "CacheDataset", lambda *a, **k: pytest.fail("loaded before the check"))
    with pytest.raises(DataError, match=f"case '{case.case_id}'"):
        load_hospital_cases(hospital, config.data)
    assert not store_root(config.data).exists() or not any(store_root(config.data).iterdir())


def test_a_folder_of_another_store_version_is_a_clear_error(study):
    config, hospital = study
    [ref, *_] = stored_cases(hospital, config.data)
    ensure_stored(ref, Recipe.of(config.data))
    meta = json.loads((ref.folder / "case.json").read_text())
    (ref.folder / "case.json").write_text(json.dumps({**meta, "store_version": case_store.STORE_VERSION - 1}))
    with pytest.raises(DataError, match="written by case store version .* delete it"):
        load_hospital_cases(hospital, config.data)
    with pytest.raises(DataError, match="written by case store version"):
        open_case(ref)


def test_a_read_only_store_names_data_cache_dir_and_is_still_read_when_complete(study, monkeypatch):
    config, hospital = study
    refs = stored_cases(hospital, config.data)
    ensure_stored(refs[0], Recipe.of(config.data))
    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if str(self).startswith(str(store_root(config.data))):  # as root, chmod would not stop a write
            raise PermissionError(13, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    assert open_case(ensure_stored(refs[0], Recipe.of(config.data))).label.shape  # stored: only read
    with pytest.raises(DataError, match=r"cannot write preprocessed cases .*Permission denied.*data\.cache_dir"):
        ensure_stored(refs[1], Recipe.of(config.data))
    assert [p.name for p in store_root(config.data).iterdir()] == [refs[0].folder.name]  # nothing half-written


def test_studies_writing_one_case_at_once_leave_one_whole_folder(study):
    config, hospital = study
    [ref, *_] = stored_cases(hospital, config.data)
    recipe = Recipe.of(config.data)
    store_root(config.data).mkdir(parents=True)
    # A writer killed mid-case leaves only its temporary folder: never taken for the case.
    (store_root(config.data) / f".{ref.folder.name}.999-dead.tmp").mkdir()
    (store_root(config.data) / f".{ref.folder.name}.999-dead.tmp" / "image.npy").write_bytes(b"half")
    assert not is_stored(ref)
    errors: list[BaseException] = []
    start = threading.Barrier(3)

    def write() -> None:
        try:
            start.wait()
            ensure_stored(ref, recipe)
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    writers = [threading.Thread(target=write) for _ in range(3)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    assert not errors
    names = sorted(p.name for p in store_root(config.data).iterdir())
    assert names == sorted([ref.folder.name, f".{ref.folder.name}.999-dead.tmp"])  # the writers' temporaries are gone
    expected = _in_memory(hospital, config.data)[0]
    assert np.array_equal(np.asarray(open_case(ref).image), expected["image"][0].numpy())


def test_write_case_keeps_the_first_writers_folder(tmp_path):
    folder = tmp_path / "store" / "key"
    arrays = {"image": np.zeros((2, 2, 2), np.float32)}
    case_store.write_case(folder, arrays, {"store_version": case_store.STORE_VERSION, "who": "first"})
    case_store.write_case(folder, {"image": np.ones((2, 2, 2), np.float32)}, {"store_version": 2, "who": "second"})
    assert json.loads((folder / "case.json").read_text())["who"] == "first"
    assert not np.load(folder / "image.npy").any()
    assert [p.name for p in folder.parent.iterdir()] == ["key"]


def _msd_case(folder: Path, image: np.ndarray, label: np.ndarray, affine: np.ndarray, slope_inter=None) -> None:
    import nibabel as nib

    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    written = nib.Nifti1Image(image, affine)
    if slope_inter is not None:  # a scaled file: nibabel reads it as float64
        written.header.set_slope_inter(*slope_inter)
    nib.save(written, folder / "imagesTr" / "c0.nii.gz")
    nib.save(nib.Nifti1Image(label, affine), folder / "labelsTr" / "c0.nii.gz")
    training = [{"image": "./imagesTr/c0.nii.gz", "label": "./labelsTr/c0.nii.gz"}]
    (folder / "dataset.json").write_text(json.dumps({"labels": {"1": "liver", "2": "spleen"}, "training": training}))


def _stored_before_the_lean_chain(ref, recipe: Recipe) -> tuple[dict, dict]:
    """A case's arrays and case.json as ensure_stored made them before the lean chain: MONAI's float32
    load and Spacingd, the int64 label gather, through CacheDataset (as load_cases did)."""
    from monai.data import CacheDataset

    from fedray.data.datasets import preprocessing
    from fedray.data.sites import site_table

    case = ref.case
    chain = preprocessing(site_table(case.label_map, list(recipe.organs)), recipe.hu_window, recipe.preprocess)
    dataset = CacheDataset([{"image": str(case.image), "label": str(case.label), "case_id": case.case_id}], chain,
                           progress=False, num_workers=0)
    labelled = torch.tensor([o in case.label_map.organs for o in recipe.organs], dtype=torch.bool)
    return datasets._stored_form({**dataset[0], "labelled": labelled}, ref, recipe)


def test_a_stored_case_is_byte_for_byte_what_it_was_before_the_lean_chain(tmp_path, monkeypatch):
    import fedray.data.resample as resample
    from fedray.config import PreprocessConfig, SiteConfig
    from fedray.data.case_store import stored_case, write_case
    from fedray.data.sites import read_site_cases

    monkeypatch.setattr(resample, "SLAB_VOXELS", 97)  # many slabs of output planes, the last one short
    real_slabs = datasets._slabs
    monkeypatch.setattr(datasets, "_slabs", lambda label: real_slabs(label, voxels=50))  # and of label planes
    rng = np.random.default_rng(0)
    shape = (21, 17, 9)
    label = np.zeros(shape, np.uint8)
    label[5:12, 4:10, 2:6] = 1
    label[12:16, 8:13, 3:7] = 2
    hu = np.where(rng.random(shape) < 0.15, -1000, rng.integers(-200, 400, shape))
    hu[:3] = -1024  # air to crop
    oblique = np.array([[0.0, 0.0, -3.0, 10.0], [-0.8, 0.0, 0.0, 5.0], [0.0, 0.7, 0.0, -7.0], [0, 0, 0, 1.0]])
    files = {  # int16 image with a uint8 label, LPS-like flips, a scaled image, int16 and float32 labels
        "ras": (hu.astype(np.int16), label, np.diag([0.8, 0.7, 2.5, 1.0]), None),
        "oblique": (hu.astype(np.int16), label.astype(np.int16), oblique, None),
        "scaled": (((hu + 1024) // 2).astype(np.int16), label.astype(np.float32), np.diag([-0.8, -0.7, 2.5, 1.0]),
                   (2.0, -1024.0)),
        "float": (hu.astype(np.float32) + 0.25, label, np.diag([1.1, 0.9, 2.0, 1.0]), None),
    }
    recipes = [PreprocessConfig(spacing=(1.5, 1.5, 3.0), crop_foreground=True),
               PreprocessConfig(spacing=(0.6, 0.9, 1.3)), PreprocessConfig(crop_foreground=True), PreprocessConfig()]
    for name, (image, labels, affine, scaling) in files.items():
        _msd_case(tmp_path / name, image, labels, affine, scaling)
        [case] = read_site_cases(SiteConfig(path=str(tmp_path / name)), require_files=True).cases
        for i, preprocess in enumerate(recipes):
            recipe = Recipe(("liver", "spleen"), (-325.0, 325.0), preprocess)
            ref = ensure_stored(stored_case(case, recipe, tmp_path / "store"), recipe)
            before = tmp_path / "before" / f"{name}{i}"
            write_case(before, *_stored_before_the_lean_chain(ref, recipe))
            assert sorted(p.name for p in ref.folder.iterdir()) == sorted(p.name for p in before.iterdir())
            for file in before.iterdir():
                assert (ref.folder / file.name).read_bytes() == file.read_bytes(), (name, preprocess, file.name)
            assert np.load(ref.folder / "label.npy").any(), (name, preprocess)  # organs kept, not a trivial case


def test_a_label_value_outside_the_sites_map_is_refused_by_both_chains(tmp_path):
    from fedray.config import PreprocessConfig, SiteConfig
    from fedray.data.case_store import stored_case
    from fedray.data.sites import read_site_cases

    label = np.zeros((6, 5, 4), np.uint8)
    label[2, 2, 2] = 7  # the site's map names 1 and 2
    _msd_case(tmp_path / "s", np.zeros((6, 5, 4), np.int16), label, np.eye(4))
    [case] = read_site_cases(SiteConfig(path=str(tmp_path / "s")), require_files=True).cases
    recipe = Recipe(("liver", "spleen"), (-325.0, 325.0), PreprocessConfig())
    ref = stored_case(case, recipe, tmp_path / "store")
    with pytest.raises(DataError, match="label value 7 is not in the site's label map"):
        ensure_stored(ref, recipe)
    with pytest.raises(RuntimeError) as raised:  # MONAI wraps the chain's DataError
        _stored_before_the_lean_chain(ref, recipe)
    cause = raised.value
    while cause is not None and not isinstance(cause, DataError):
        cause = cause.__cause__
    assert "label value 7 is not in the site's label map" in str(cause)
    assert not is_stored(ref)


def test_open_case_parses_each_header_once_and_a_file_written_anew_again(study, monkeypatch):
    config, hospital = study
    [ref, *_] = [ensure_stored(ref, Recipe.of(config.data)) for ref in stored_cases(hospital, config.data)]
    parsed = []
    header = case_store._plain_header
    monkeypatch.setattr(case_store, "_plain_header", lambda file: parsed.append(file.name) or header(file))
    first = open_case(ref)
    again = open_case(ref)
    assert len(parsed) == 3 and np.array_equal(first.image, again.image)  # image, label, foreground
    parsed.clear()
    open_case(ref)
    assert parsed == []  # every layout remembered
    path = ref.folder / "image.npy"
    replaced = np.asarray(first.image) + 1.0
    np.save(ref.folder / "other.npy", replaced)
    os.replace(ref.folder / "other.npy", path)  # another file under the path: its header is read again
    assert np.array_equal(open_case(ref).image, replaced) and parsed == [str(path)]
    meta = json.loads((ref.folder / "case.json").read_text())
    (ref.folder / "new.json").write_text(json.dumps({**meta, "store_version": case_store.STORE_VERSION - 1}))
    os.replace(ref.folder / "new.json", ref.folder / "case.json")  # the version is checked again
    with pytest.raises(DataError, match="written by case store version"):
        open_case(ref)


@pytest.mark.parametrize(
    "array",
    [np.zeros(()), np.zeros((0,)), np.zeros((7,), np.uint8), np.zeros((3, 4), ">i2"), np.zeros((2, 3), bool),
     np.asfortranarray(np.zeros((3, 4, 5), np.float32)), np.zeros((2,), np.complex64), np.zeros((2,), [("a", "<f4")])],
    ids=["0-d", "empty", "uint8", "big-endian", "bool", "fortran", "complex", "structured"],
)
def test_a_mapped_file_reads_as_np_load_whichever_parser_reads_its_header(tmp_path, array):
    path = tmp_path / "a.npy"
    np.save(path, array)
    with open(path, "rb") as file:
        fast = case_store._plain_header(file)
        file.seek(0)
        np.lib.format.read_magic(file)
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(file)
        assert fast is None or fast == (shape, fortran, dtype, file.tell())  # None: numpy's parser reads it
    assert (fast is None) == (array.dtype.kind == "c" or array.dtype.names is not None)
    mapped = case_store.map_array(path)
    assert mapped.shape == array.shape and mapped.dtype == array.dtype and np.array_equal(mapped, array)
    assert mapped.flags.f_contiguous == array.flags.f_contiguous and not mapped.flags.writeable


def test_open_case_writes_a_missing_case_through_store_and_raises_without_it(study):
    config, hospital = study
    [ref, *_] = stored_cases(hospital, config.data)  # nothing stored yet
    with pytest.raises(FileNotFoundError):
        open_case(ref)
    written = []

    def store(missing):
        written.append(missing)
        return ensure_stored(missing, Recipe.of(config.data))

    first = open_case(ref, store)
    assert written == [ref] and is_stored(ref)
    again = open_case(ref, store)  # stored now: store is not called again
    assert written == [ref] and np.array_equal(first.image, again.image) and np.array_equal(first.label, again.label)


def test_a_first_open_reads_the_store_version_from_case_jsons_first_bytes(study, monkeypatch):
    config, hospital = study
    [ref, *_] = [ensure_stored(ref, Recipe.of(config.data)) for ref in stored_cases(hospital, config.data)]
    assert case_store._leading_version(os.fspath(ref.folder / "case.json")) == case_store.STORE_VERSION
    checked = []
    full_check = case_store.check_version
    monkeypatch.setattr(case_store, "check_version", lambda folder: checked.append(folder) or full_check(folder))
    case_store._VERSIONS_CHECKED.clear()
    open_case(ref)
    assert checked == []  # write_case's case.json: the version from its first bytes, no full parse
    meta = json.loads((ref.folder / "case.json").read_text())
    version = meta.pop("store_version")
    (ref.folder / "new.json").write_text(json.dumps({**meta, "store_version": version}))  # the version last
    os.replace(ref.folder / "new.json", ref.folder / "case.json")
    open_case(ref)
    assert checked == [ref.folder]  # another form: parsed whole, and current
    (ref.folder / "new.json").write_text(json.dumps({**meta, "store_version": version - 1}))
    os.replace(ref.folder / "new.json", ref.folder / "case.json")
    with pytest.raises(DataError, match="written by case store version"):
        open_case(ref)


@pytest.mark.parametrize(
    ("text", "version"),
    [('{\n "store_version": 2,\n "site": "a"}', 2), ('{"store_version": 12}', 12), ('{"store_version": 2 }', 2),
     ('{"site": "a", "store_version": 2}', None), ('{"store_version": "2"}', None), ('{"store_version": 2x', None)],
)
def test_leading_version_reads_only_a_case_json_that_states_the_version_first(tmp_path, text, version):
    path = tmp_path / "case.json"
    path.write_text(text)
    assert case_store._leading_version(os.fspath(path)) == version
