"""Per-hospital and test datasets: the deterministic MONAI preprocessing chain and its inverse to the original grid."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from monai.data import CacheDataset, MetaTensor
from monai.transforms import (
    Compose,
    CopyItemsd,
    CropForegroundd,
    EnsureChannelFirstd,
    EnsureTyped,
    Lambda,
    Lambdad,
    LoadImaged,
    Orientationd,
    ScaleIntensityRanged,
    SpatialResample,
    Spacingd,
)

from fedray.config import DataConfig, PreprocessConfig, SiteConfig
from fedray.data.case_store import (
    STORE_VERSION,
    Recipe,
    StoredCase,
    check_fits_memory,
    check_version,
    foreground_locations,
    is_stored,
    store_root,
    stored_case,
    write_case,
)
from fedray.data.resample import SlabSpacingd
from fedray.data.sites import LabelMap, SiteCase, read_site_cases, site_table
from fedray.errors import DataError

if TYPE_CHECKING:
    from fedray.data.federation import Hospital


def preprocessing(
    table: np.ndarray | None,
    hu_window: tuple[float, float],
    preprocess: PreprocessConfig | None = None,
    with_label: bool = True,
    lean: bool = False,
) -> Compose:
    """Deterministic chain, run once per case (see fedray.data.case_store): load, RAS, [spacing], HU window, [body crop], study labels.

    The HU window is scaled to [-1, 1]; spacing and crop are optional (`preprocess`). Each case also
    keeps its study label map on the file's own grid (`original_label`) and the affines of both grids
    (`affine`, `original_affine`), so evaluation can score in the original image space. Without a
    label (`with_label=False`, a new scan to segment) the same chain runs on the image alone and keeps
    the original grid as `original_image`'s shape and `original_affine`.

    `lean=True` (how `load_cases`, and so the case store, runs it) gives the same arrays and affines,
    bit for bit, in about half the memory on a clinical-size CT (0.53 instead of 1.0 GB above the
    process's own on 512x512x112 int16 resampled to 1.5 x 1.5 x 3 mm): voxels of a type float32
    holds exactly (int8, uint8, int16) stay as loaded until the resampling or the HU window computes
    with them, instead of float32 from the load; the resampling builds its grid a slab at a time
    (fedray.data.resample); the study labels are mapped a slab at a time instead of through an int64
    copy of the whole label. Its trace has two more Lambdad steps (loaded cases drop the trace).
    """
    preprocess = PreprocessConfig() if preprocess is None else preprocess

    # A table gather, not MapLabelValued: one pass per value (2-4x slower on a 13-value site), keeps non-integers.
    def to_study_labels(label: torch.Tensor) -> torch.Tensor:
        values = label.long()
        if int(values.max()) >= len(table) or int(values.min()) < 0:
            raise DataError(f"label value {int(values.max())} is not in the site's label map")
        return torch.as_tensor(table)[values].to(torch.uint8)  # up to 255 structures fit; 8x less memory

    def to_study_labels_in_slabs(label: torch.Tensor) -> torch.Tensor:
        # The same gather and check on slabs of planes: no int64 copy of a whole clinical label (0.24 GB each).
        slabs = _slabs(label)
        if slabs:
            high = max(int(label[:, a:b].long().max()) for a, b in slabs)
            low = min(int(label[:, a:b].long().min()) for a, b in slabs)
            if high >= len(table) or low < 0:
                raise DataError(f"label value {high} is not in the site's label map")
        lookup = torch.as_tensor(table)
        out = torch.empty_like(label, dtype=torch.uint8)
        for a, b in slabs:
            out[:, a:b] = lookup[label[:, a:b].long()].to(torch.uint8)
        return out

    original = "original_label" if with_label else "original_image"

    def keep_geometry(data: dict) -> dict:
        # Read before EnsureTyped drops the metadata; float64 so a round trip of the grid is exact.
        data["affine"] = data["image"].affine.to(torch.float64).clone()
        data["original_affine"] = data[original].affine.to(torch.float64).clone()
        return data

    keys = ["image", "label"] if with_label else ["image"]
    low, high = hu_window
    steps = [
        LoadImaged(keys=keys, image_only=True, dtype=None if lean else np.float32),
        *([Lambdad(keys=keys, func=exact_or_float32)] if lean else []),
        EnsureChannelFirstd(keys=keys),
        CopyItemsd(keys=keys[-1], names=original),  # before any spatial change
        Orientationd(keys=keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
    ]
    if preprocess.spacing is not None:
        spacing = SlabSpacingd if lean else Spacingd
        steps.append(spacing(keys=keys, pixdim=preprocess.spacing, mode=("bilinear", "nearest")[: len(keys)]))
    if lean:  # what the HU window computes with, as when the load made float32 (a no-op after resampling)
        steps.append(Lambdad(keys="image", func=as_float32))
    steps.append(ScaleIntensityRanged(keys="image", a_min=low, a_max=high, b_min=-1.0, b_max=1.0, clip=True))
    if preprocess.crop_foreground:
        body = CropForegroundd(keys=keys, source_key="image", select_fn=above_window, allow_smaller=True)
        steps.append(body)
    if with_label:
        mapping = to_study_labels_in_slabs if lean else to_study_labels
        steps.append(Lambdad(keys=["label", "original_label"], func=mapping))
    steps += [
        Lambda(keep_geometry),
        EnsureTyped(keys=[*keys, original], track_meta=False),
    ]
    return Compose(steps)


# Voxel types whose every value float32 holds exactly: the lean chain keeps them as loaded (made float32
# or float64 later they give the numbers float32 at the load gave). Any other type becomes float32 at
# the load, as MONAI's default does (a scaled file, which nibabel reads as float64, included).
KEPT_AS_LOADED = (torch.int8, torch.uint8, torch.int16, torch.float32)


def exact_or_float32(array: torch.Tensor) -> torch.Tensor:
    """A loaded volume as it is if its type is one of KEPT_AS_LOADED, else as float32."""
    return array if array.dtype in KEPT_AS_LOADED else array.to(torch.float32)


def _slabs(label: torch.Tensor, voxels: int = 2**22) -> list[tuple[int, int]]:
    """Ranges of planes along the first spatial axis of a (C, X, ...) volume, about `voxels` each."""
    planes = max(1, voxels // max(1, int(np.prod(label.shape[2:]))))
    return [(start, min(start + planes, label.shape[1])) for start in range(0, label.shape[1], planes)]


def as_float32(image: torch.Tensor) -> torch.Tensor:
    return image.to(torch.float32)


def above_window(image: torch.Tensor) -> torch.Tensor:
    """The body: voxels above the HU window's low end (-1 after scaling), i.e. not air."""
    return image > -1.0


def to_original_space(labels: torch.Tensor, case: dict) -> torch.Tensor:
    """Map an (X, Y, Z) label map on the preprocessed grid of `case` back to the file's original grid.

    Nearest-neighbour resampling from the preprocessed grid's affine to the original one: this undoes
    the reorientation exactly, resamples a changed spacing back, and fills what a foreground crop
    removed with background, the same as MONAI's Invertd on the deterministic chain. A case without
    geometry (hand-made tensors) is returned as it is.
    """
    # Not Invertd (same labels): it needs MONAI's transform trace, which stored cases drop, and is 1.7-13x slower.
    if "original_affine" not in case:
        return labels
    affine, original = case["affine"], case["original_affine"]
    shape = tuple((case["original_label"] if "original_label" in case else case["original_image"]).shape[1:])
    if tuple(labels.shape) == shape and torch.allclose(affine, original):
        return labels
    resample = SpatialResample(mode="nearest", padding_mode="zeros", dtype=torch.float64)
    source = MetaTensor(labels[None].double(), affine=affine)
    moved = resample(source, dst_affine=original, spatial_size=shape)
    return torch.as_tensor(moved)[0].round().to(labels.dtype)


def load_hospital_cases(hospital: Hospital, data: DataConfig) -> list[dict]:
    """A hospital's cases in `load_cases`' form, preprocessed once into the case store and read from it."""
    return load_cases(hospital.cases, data.organs, data.hu_window, data.preprocess, store_root(data))


def load_folder(
    folder: Path,
    organs: Sequence[str],
    hu_window: tuple[float, float],
    *,
    preprocess: PreprocessConfig | None = None,
    cache_dir: Path | None = None,
) -> list[dict]:
    """Load and preprocess every case of an MSD folder once (the test set)."""
    cases = read_site_cases(SiteConfig(path=str(folder)), require_files=True).cases
    return load_cases(cases, organs, hu_window, preprocess, cache_dir)


def load_cases(
    cases: Sequence[SiteCase],
    organs: Sequence[str],
    hu_window: tuple[float, float],
    preprocess: PreprocessConfig | None = None,
    cache_dir: Path | None = None,
) -> list[dict]:
    """Load cases in the given order, with their `labelled` masks; one MONAI dataset per label map.

    With `cache_dir` (a case store, see fedray.data.case_store), each case is preprocessed once into
    the store and read back from it, so a later study, resume or sweep cell with the same data and
    preprocessing reads arrays instead of decoding and transforming the NIfTI again; a case is
    keyed by its files' paths, sizes and modification times, so an edited file is preprocessed again.
    """
    organs = list(organs)
    if cache_dir is not None:
        recipe = Recipe(tuple(organs), tuple(hu_window), preprocess or PreprocessConfig())
        refs = [ensure_stored(stored_case(case, recipe, Path(cache_dir)), recipe) for case in cases]
        return [read_stored_case(ref) for ref in refs]
    loaded: list[dict | None] = [None] * len(cases)
    by_map: dict[LabelMap, list[int]] = {}
    for i, case in enumerate(cases):
        by_map.setdefault(case.label_map, []).append(i)
    for label_map, indices in by_map.items():
        items = [
            {"image": str(cases[i].image), "label": str(cases[i].label), "case_id": cases[i].case_id}
            for i in indices
        ]
        table = site_table(label_map, organs)
        chain = preprocessing(table, hu_window, preprocess, lean=True)
        try:  # copy_cache=False: the chain has no random step, so the cached cases are handed out as they are
            dataset = CacheDataset(items, chain, progress=False, num_workers=0, copy_cache=False)
            labelled = torch.tensor([organ in label_map.organs for organ in organs], dtype=torch.bool)
            for position, i in enumerate(indices):
                loaded[i] = {**dataset[position], "labelled": labelled}
        except RuntimeError as error:  # MONAI wraps errors raised inside transforms
            cause = error.__cause__
            while cause is not None and not isinstance(cause, DataError):
                cause = cause.__cause__
            if cause is None:
                raise
            raise DataError(f"site '{cases[indices[0]].site}' ({cases[indices[0]].source}): {cause}") from None
    return loaded


def ensure_stored(ref: StoredCase, recipe: Recipe) -> StoredCase:
    """Preprocess the case into the case store unless it is there already; returns `ref`.

    Safe when other processes write the same case at once (see `case_store.write_case`).

    Raises:
        DataError: the case does not fit the memory available, its preprocessing fails, the store
            folder cannot be written, or a folder of another store version sits under its key.
    """
    if is_stored(ref):
        check_version(ref.folder)
        return ref
    check_fits_memory(ref.case, preprocess=recipe.preprocess)
    [loaded] = load_cases([ref.case], recipe.organs, recipe.hu_window, recipe.preprocess)
    write_case(ref.folder, *_stored_form(loaded, ref, recipe))
    return ref


def _stored_form(loaded: dict, ref: StoredCase, recipe: Recipe) -> tuple[dict[str, np.ndarray], dict]:
    """A preprocessed case as the store keeps it: its arrays and its case.json."""
    label = np.asarray(loaded["label"])[0].astype(np.uint8)
    foreground, offsets = foreground_locations(label, len(recipe.organs))
    arrays = {
        "image": np.ascontiguousarray(np.asarray(loaded["image"])[0], dtype=np.float32),
        "label": label,
        "original_label": np.asarray(loaded["original_label"])[0].astype(np.uint8),
        "foreground": foreground,
        "foreground_offsets": offsets,
    }
    case = ref.case
    meta = {
        "store_version": STORE_VERSION,
        "site": case.site,
        "case_id": case.case_id,
        "image_file": str(case.image),
        "label_file": str(case.label),
        "organs": list(recipe.organs),
        "labelled": list(ref.labelled),
        "affine": np.asarray(loaded["affine"], dtype=np.float64).tolist(),
        "original_affine": np.asarray(loaded["original_affine"], dtype=np.float64).tolist(),
        "shape": list(label.shape),
        "original_shape": list(arrays["original_label"].shape),
    }
    return arrays, meta


def read_stored_case(ref: StoredCase) -> dict:
    """A stored case in `load_cases`' form ((1, X, Y, Z) tensors and geometry), read into memory."""
    meta = check_version(ref.folder)

    def tensor(name: str) -> torch.Tensor:
        return torch.from_numpy(np.load(ref.folder / f"{name}.npy", allow_pickle=False))[None]

    return {
        "image": tensor("image"),
        "label": tensor("label"),
        "original_label": tensor("original_label"),
        "affine": torch.tensor(meta["affine"], dtype=torch.float64),
        "original_affine": torch.tensor(meta["original_affine"], dtype=torch.float64),
        "case_id": meta["case_id"],
        "labelled": torch.tensor(meta["labelled"], dtype=torch.bool),
    }
