"""The one on-disk form of a preprocessed case: a folder of uncompressed arrays, read memory-mapped.

Each case is preprocessed once per key (its files and their sizes and modification times, its
site's label map, the study organs, the HU window, the preprocessing and this store's version) into

    <data.cache_dir>/cases/<key>/
        image.npy            float32 (X, Y, Z), the HU window scaled to [-1, 1]
        label.npy            uint8 (X, Y, Z), study labels (organ k -> k + 1; 0 background / not labelled)
        original_label.npy   uint8 (X, Y, Z) on the file's own grid, for evaluation in the original space
        foreground.npy       flat voxel indices of label k, for k = 1..K in turn, each run sorted
        foreground_offsets.npy  int64 (K + 1,): organ k's voxels are foreground[offsets[k-1]:offsets[k]]
        case.json            store version, case id, affines of both grids, shapes, labelled organs

float32, not float16: training and evaluation read exactly the values the MONAI chain produced
(float16 would round the window's 650 HU to about 0.3 HU steps near its ends), and the extra disk
is cheap because only the patches a task touches are paged in. A case folder is written under a
temporary name and renamed into place, so a reader sees a whole case or none.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import mmap
import os
import re
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedray.errors import DataError
from fedray.npy import plain_layout

if TYPE_CHECKING:
    from fedray.config import DataConfig, PreprocessConfig
    from fedray.data.federation import Hospital
    from fedray.data.sites import SiteCase

_MONAI_VERSION = importlib.metadata.version("monai")  # without importing MONAI (seconds) where keys are made
# Bump when the preprocessing chain or the folder layout changes in a way its config does not show.
STORE_VERSION = 2
CASE_FILE = "case.json"
ARRAYS = ("image", "label", "original_label", "foreground", "foreground_offsets")
# Peak memory of preprocessing one case (fedray.data.datasets' lean chain), per voxel of the file's
# grid: the float64 copy a resampling reads (8), the image as loaded (int16 2, float32 4), the label
# and its copy on the original grid (1 each as uint8), and what the allocator keeps (about 2); and per
# voxel of the resampled grid: the float32 image and label the resampling writes and its grid's slabs.
# Measured: 18 bytes per file voxel on a 512x512x112 int16 CT resampled to 1.5 x 1.5 x 3 mm (0.53 GB).
BYTES_PER_VOXEL = 8 + 4 + 2 + 2
BYTES_PER_RESAMPLED_VOXEL = 12


@dataclass(frozen=True)
class Recipe:
    """How the study preprocesses a case besides its site's label map (from its DataConfig)."""

    organs: tuple[str, ...]
    hu_window: tuple[float, float]
    preprocess: PreprocessConfig

    @classmethod
    def of(cls, data: DataConfig) -> Recipe:
        return cls(tuple(data.organs), tuple(data.hu_window), data.preprocess)


@dataclass(frozen=True)
class StoredCase:
    """A reference to one preprocessed case (what the driver hands an actor instead of its arrays)."""

    folder: Path
    case: SiteCase
    labelled: tuple[bool, ...]  # the study organs the case's site annotates


@dataclass(frozen=True)
class CaseArrays:
    """One case's training view: arrays (memory-mapped from the store, or in memory) and its labelled organs."""

    image: np.ndarray  # (X, Y, Z) float32
    label: np.ndarray  # (X, Y, Z) uint8
    foreground: np.ndarray  # flat indices of the voxels of every labelled organ
    labelled: np.ndarray  # (n_organs,) bool

    @classmethod
    def from_loaded(cls, case: dict) -> CaseArrays:
        """From a case as `load_cases` returns it ((1, X, Y, Z) tensors): foreground found by one scan."""
        image = np.asarray(case["image"])[0]
        label = np.asarray(case["label"])[0].astype(np.uint8, copy=False)
        return cls(image, label, np.flatnonzero(label), np.asarray(case["labelled"], dtype=bool))


def store_root(data: DataConfig) -> Path:
    """Where the study's preprocessed cases live: data.cache_dir/cases."""
    return Path(data.cache_dir) / "cases"


def case_key(case: SiteCase, recipe: Recipe) -> str:
    """A folder name determined by everything a preprocessed case depends on."""
    from fedray.configtypes import to_data
    from fedray.data.sites import site_table

    what = {
        "version": STORE_VERSION,
        "image": str(case.image),
        "label": str(case.label),
        "stamp": [file_stamp(case.image), file_stamp(case.label)],
        "labels": site_table(case.label_map, list(recipe.organs)).tolist(),
        "labelled": [organ in case.label_map.organs for organ in recipe.organs],
        "hu_window": list(recipe.hu_window),
        "preprocess": to_data(recipe.preprocess),
        "monai": _MONAI_VERSION,  # the chain's results depend on it
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:24]


def file_stamp(path: Path) -> str:
    """Size and modification time: an edited file gets a new key."""
    stat = os.stat(path)
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def stored_case(case: SiteCase, recipe: Recipe, root: Path) -> StoredCase:
    """The store reference of one case under `root`; only the files' stamps are read."""
    labelled = tuple(organ in case.label_map.organs for organ in recipe.organs)
    return StoredCase(Path(root) / case_key(case, recipe), case, labelled)


def stored_cases(hospital: Hospital, data: DataConfig) -> tuple[StoredCase, ...]:
    """The store references of a hospital's cases, in order."""
    recipe, root = Recipe.of(data), store_root(data)
    return tuple(stored_case(case, recipe, root) for case in hospital.cases)


def is_stored(ref: StoredCase) -> bool:
    """True when the case's folder is complete (it is only ever renamed into place whole)."""
    return (ref.folder / CASE_FILE).is_file()


def preprocessing_bytes(case: SiteCase, preprocess: PreprocessConfig | None = None) -> int:
    """Estimated peak memory of preprocessing `case` (not counting the process's own), from its NIfTI header.

    The resampled grid's voxels are the file's extent in mm over the target spacing (`preprocess.spacing`).
    """
    import nibabel

    header = nibabel.load(case.image).header
    shape = [int(n) for n in header.get_data_shape()[:3]]
    voxels = int(np.prod(shape, dtype=np.int64))
    resampled = voxels
    if preprocess is not None and preprocess.spacing is not None:
        extent = np.prod([n * float(z) for n, z in zip(shape, header.get_zooms()[:3])])
        resampled = int(extent / np.prod(preprocess.spacing))
    return voxels * BYTES_PER_VOXEL + resampled * BYTES_PER_RESAMPLED_VOXEL


def check_fits_memory(case: SiteCase, available: int | None = None, preprocess: PreprocessConfig | None = None) -> int:
    """Refuse a case whose preprocessing would not fit in the memory available, before loading it.

    The estimate (`preprocessing_bytes`) reads only the NIfTI header. Returns it, in bytes.
    """
    needed = preprocessing_bytes(case, preprocess)
    available = available_memory() if available is None else available
    if needed > available:
        raise DataError(
            f"site '{case.site}', case '{case.case_id}' ({case.image}): preprocessing needs about "
            f"{needed / 2**30:.1f} GiB (estimated from its header: {BYTES_PER_VOXEL} bytes a voxel and "
            f"{BYTES_PER_RESAMPLED_VOXEL} a resampled one) but only "
            f"{available / 2**30:.1f} GiB of memory is available. Preprocess on a machine with more "
            "memory (the store under data.cache_dir is reused from there), crop the volume, or "
            "leave the case out (data.on_bad_case: skip does not cover this check)."
        )
    return needed


def available_memory() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def foreground_locations(label: np.ndarray, n_organs: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices of each organ's voxels (organ 1 first, each run sorted) and the runs' offsets."""
    flat = label.reshape(-1)
    index = np.flatnonzero(flat)
    values = flat[index]
    order = np.argsort(values, kind="stable")  # stable: each organ's run stays sorted
    index = index[order].astype(np.int32 if flat.size < 2**31 else np.int64)
    offsets = np.searchsorted(values[order], np.arange(1, n_organs + 2), side="left").astype(np.int64)
    offsets[0] = 0
    return index, offsets


def write_case(folder: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Write a case folder under a temporary name and rename it into place (the first writer wins)."""
    root = folder.parent
    temporary = root / f".{folder.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    try:
        root.mkdir(parents=True, exist_ok=True)
        temporary.mkdir()
        for name, array in arrays.items():
            np.save(temporary / f"{name}.npy", array, allow_pickle=False)
        (temporary / CASE_FILE).write_text(json.dumps(meta, indent=1))  # last: marks the folder whole
        try:
            os.rename(temporary, folder)
        except OSError:
            if not (folder / CASE_FILE).is_file():  # not another writer's whole case: a real failure
                raise
    except PermissionError as error:
        raise DataError(_read_only_message(root, error)) from None
    except OSError as error:
        if error.errno in (13, 30):  # EACCES, EROFS
            raise DataError(_read_only_message(root, error)) from None
        raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _read_only_message(root: Path, error: OSError) -> str:
    return (
        f"cannot write preprocessed cases to {root} ({error.strerror or error}): the case store lives "
        "under data.cache_dir, which must be writable when a case is preprocessed for the first time. "
        "Set data.cache_dir to a writable folder, or preprocess the study once where the folder is "
        "writable (`fedray run` writes every missing case before round 1) and then share it read-only: "
        "a store holding every case of the study is only read."
    )


def check_version(folder: Path) -> dict:
    """The case's case.json, after checking it was written by this store version."""
    meta = json.loads((folder / CASE_FILE).read_text())
    version = meta.get("store_version")
    if version != STORE_VERSION:
        raise DataError(
            f"the preprocessed case in {folder} was written by case store version {version}, but this "
            f"fedray reads version {STORE_VERSION}. The folder's name should have changed with the "
            "version, so it was copied or renamed by hand: delete it (it is preprocessed again on "
            "next use) or point data.cache_dir at a fresh folder."
        )
    return meta


def open_case(ref: StoredCase, store: Callable[[StoredCase], StoredCase] | None = None) -> CaseArrays:
    """The case's training arrays, memory-mapped read-only: only the pages a patch touches are read.

    A case not in the store (no case.json) raises FileNotFoundError, or with `store` is first written
    by `store(ref)` (`datasets.ensure_stored`): the stat that checks the version finds it missing, so
    an open needs no `is_stored` of its own (a second stat of case.json per case, every task).
    """
    try:
        _check_version_once(ref.folder)
    except FileNotFoundError:
        if store is None:
            raise
        ref = store(ref)
        _check_version_once(ref.folder)
    mapped = [map_array(ref.folder / f"{name}.npy") for name in ("image", "label", "foreground")]
    return CaseArrays(*mapped, np.asarray(ref.labelled, dtype=bool))


def map_array(path: Path) -> np.ndarray:
    """A .npy file's array, memory-mapped read-only (what np.load(path, mmap_mode="r") gives).

    A training task opens its hospital's cases each time: np.memmap's construction costs about three
    times this plain mapping, and parsing the .npy header (numpy reads it with ast.literal_eval) most
    of the rest, so a process parses each file's header once (`_layout`).
    """
    with open(path, "rb") as file:
        layout = _layout(path, file)
        if layout is None:  # a header version np.save writes only for exotic field names; numpy reads it
            return np.load(path, mmap_mode="r", allow_pickle=False)
        shape, fortran, dtype, offset = layout
        count = int(np.prod(shape, dtype=np.int64))
        if count == 0:  # nothing to map (mmap refuses an empty region)
            empty = np.empty(shape, dtype)
            empty.flags.writeable = False
            return empty
        buffer = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    array = np.frombuffer(buffer, dtype=dtype, count=count, offset=offset)
    return array.reshape(shape, order="F" if fortran else "C")


# What this process has read of the store's files, each under the file's stamp (device, inode, size,
# modification time), so a file written anew is read anew. A case folder is written once under a
# temporary name and renamed into place, so a stored file does not change under its path; the stamp
# guards against a store edited by hand. Parsing a .npy header costs about 60 us (three per case),
# reading case.json 30 us: a tenth of a millisecond per case, every task, without these.
_LAYOUTS: dict[str, tuple[tuple[int, ...], tuple | None]] = {}  # .npy path -> (stamp, layout or None)
_VERSIONS_CHECKED: dict[str, tuple[int, ...]] = {}  # case.json path -> stamp when it was found current
_MEMO_MAX = 1 << 16  # entries of each, then forgotten all at once (about 10 MB)


def _stamp(stat: os.stat_result) -> tuple[int, ...]:
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def _remember(memo: dict, key: str, value) -> None:
    if len(memo) >= _MEMO_MAX:
        memo.clear()
    memo[key] = value


def _layout(path: Path, file) -> tuple | None:
    """(shape, fortran order, dtype, data offset) from the header of the .npy `file` open at its start;
    None for a header version that np.load should read. Parsed once per file stamp in this process."""
    key, stamp = os.fspath(path), _stamp(os.fstat(file.fileno()))
    memo = _LAYOUTS.get(key)
    if memo is not None and memo[0] == stamp:
        return memo[1]
    layout = _plain_header(file)
    if layout is None:  # not the header np.save writes for a plain array: numpy's own parser
        file.seek(0)
        version = np.lib.format.read_magic(file)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(file)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(file)
        else:
            _remember(_LAYOUTS, key, (stamp, None))
            return None
        if dtype.hasobject:
            raise DataError(f"{path} holds Python objects, which the case store never writes")
        layout = (shape, fortran, dtype, file.tell())
    _remember(_LAYOUTS, key, (stamp, layout))
    return layout


def _plain_header(file) -> tuple | None:
    """The layout from a plain array's .npy header (`fedray.npy.plain_layout`); None for any other header."""
    return plain_layout(file.read)


def _check_version_once(folder: Path) -> None:
    """`check_version(folder)`, done again only when the folder's case.json is another file than when
    it last passed in this process (FileNotFoundError when it has none)."""
    key = os.fspath(folder / CASE_FILE)
    stamp = _stamp(os.stat(key))
    if _VERSIONS_CHECKED.get(key) != stamp:
        # A case's first open in a process (most tasks of a study that samples few hospitals a round)
        # needs only the version, which write_case's case.json states first: read from its first bytes
        # (3 us), not by parsing the whole file (25 us). Any other form, or another version: check_version.
        if _leading_version(key) != STORE_VERSION:
            check_version(folder)
        _remember(_VERSIONS_CHECKED, key, stamp)


# The start of the case.json that write_case writes (json.dumps of a dict whose first key is the version).
_LEADING_VERSION = re.compile(rb'\{\s*"store_version": (\d+)[,}\s]')


def _leading_version(path: str) -> int | None:
    """The store version a case.json states as its first field, as write_case writes it; None otherwise."""
    with open(path, "rb") as file:
        match = _LEADING_VERSION.match(file.read(64))
    return int(match[1]) if match else None
