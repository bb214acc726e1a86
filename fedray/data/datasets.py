"""Per-hospital and test datasets: MONAI transforms, cached once, and seeded random patch batches."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import monai
from monai.data import CacheDataset, MetaTensor, PersistentDataset
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
    RandAffined,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    ScaleIntensityRanged,
    SpatialPadd,
    SpatialResample,
    Spacingd,
)

from fedray.atomic import atomic_file
from fedray.config import AugmentConfig, DataConfig, PreprocessConfig, SiteConfig
from fedray.configtypes import to_data
from fedray.data.sites import LabelMap, SiteCase, read_site_cases
from fedray.errors import DataError
from fedray.training.hooks import Batch

if TYPE_CHECKING:
    from fedray.data.federation import Hospital


def label_lookup(label_names: dict[int, str], organs: Sequence[str]) -> np.ndarray:
    """Table mapping a site's label values to study indices (organ k -> k+1; others -> 0)."""
    table = np.zeros(max([0, *label_names]) + 1, dtype=np.int64)
    for value, name in label_names.items():
        if name in organs:
            table[value] = organs.index(name) + 1
    return table


def site_table(label_map: LabelMap, organs: Sequence[str]) -> np.ndarray:
    """`label_lookup` of a site: values it knows but does not train on map to background, like unlabelled organs."""
    return label_lookup({**dict.fromkeys(label_map.values, ""), **dict(label_map.names)}, organs)


def preprocessing(
    table: np.ndarray | None,
    hu_window: tuple[float, float],
    preprocess: PreprocessConfig | None = None,
    with_label: bool = True,
) -> Compose:
    """Deterministic chain, cached per case: load, RAS, [spacing], HU window, [body crop], study labels.

    The HU window is scaled to [-1, 1]; spacing and crop are optional (`preprocess`). Each case also
    keeps its study label map on the file's own grid (`original_label`) and the affines of both grids
    (`affine`, `original_affine`), so evaluation can score in the original image space. Without a
    label (`with_label=False`, a new scan to segment) the same chain runs on the image alone and keeps
    the original grid as `original_image`'s shape and `original_affine`.
    """
    preprocess = PreprocessConfig() if preprocess is None else preprocess

    # A table gather, not MapLabelValued: one pass per value (2-4x slower on a 13-value site), keeps non-integers.
    def to_study_labels(label: torch.Tensor) -> torch.Tensor:
        values = label.long()
        if int(values.max()) >= len(table) or int(values.min()) < 0:
            raise DataError(f"label value {int(values.max())} is not in the site's label map")
        return torch.as_tensor(table)[values].to(torch.uint8)  # up to 255 structures fit; 8x less memory

    original = "original_label" if with_label else "original_image"

    def keep_geometry(data: dict) -> dict:
        # Read before EnsureTyped drops the metadata; float64 so a round trip of the grid is exact.
        data["affine"] = data["image"].affine.to(torch.float64).clone()
        data["original_affine"] = data[original].affine.to(torch.float64).clone()
        return data

    keys = ["image", "label"] if with_label else ["image"]
    low, high = hu_window
    steps = [
        LoadImaged(keys=keys, image_only=True),
        EnsureChannelFirstd(keys=keys),
        CopyItemsd(keys=keys[-1], names=original),  # before any spatial change
        Orientationd(keys=keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
    ]
    if preprocess.spacing is not None:
        steps.append(Spacingd(keys=keys, pixdim=preprocess.spacing, mode=("bilinear", "nearest")[: len(keys)]))
    steps.append(ScaleIntensityRanged(keys="image", a_min=low, a_max=high, b_min=-1.0, b_max=1.0, clip=True))
    if preprocess.crop_foreground:
        body = CropForegroundd(keys=keys, source_key="image", select_fn=above_window, allow_smaller=True)
        steps.append(body)
    if with_label:
        steps.append(Lambdad(keys=["label", "original_label"], func=to_study_labels))
    steps += [
        Lambda(keep_geometry),  # a MONAI Transform, so PersistentDataset caches past it
        EnsureTyped(keys=[*keys, original], track_meta=False),
    ]
    return Compose(steps)


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
    # Not Invertd (same labels): it needs MONAI's transform trace, which cached cases drop, and is 1.7-13x slower.
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
    """Load and preprocess a hospital's cases once, each through its own site's label map (the actor's loader)."""
    return load_cases(hospital.cases, data.organs, data.hu_window, data.preprocess, persistent_cache_dir(data))


def load_training_arrays(hospital: Hospital, data: DataConfig) -> list[dict[str, np.ndarray]]:
    """What a hospital trains on (`training_arrays` of its preprocessed cases): its actor's loader.

    With the persistent cache, these arrays are also kept as one uncompressed .npz per hospital,
    keyed by everything they depend on (each case's files, their sizes and modification times, its
    label map, the study organs, the HU window and preprocessing), so a hospital's first use in a
    later study, resume or sweep cell is one file read instead of a torch.load and a MONAI chain set
    up per case: at a thousand hospitals, most of a round's hospitals are new to their actor.
    """
    cache = persistent_cache_dir(data)
    if cache is None:
        return training_arrays(load_hospital_cases(hospital, data))
    path = cache / "arrays" / f"{_arrays_key(hospital.cases, data)}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as archive:
            return [{key: archive[f"{i}/{key}"] for key in TRAINING_KEYS} for i in range(len(hospital.cases))]
    arrays = training_arrays(load_hospital_cases(hospital, data))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as file:  # another process may be reading or writing the same file
        np.savez(file, **{f"{i}/{key}": value for i, case in enumerate(arrays) for key, value in case.items()})
    return arrays


def _arrays_key(cases: Sequence[SiteCase], data: DataConfig) -> str:
    """A file name determined by everything a hospital's training arrays depend on."""
    organs = list(data.organs)
    preprocessed_as = {  # one key per label map: a hospital's cases usually share one
        label_map: _preprocessing_key(site_table(label_map, organs), data.hu_window, data.preprocess)
        for label_map in {case.label_map for case in cases}
    }
    what = [
        [
            preprocessed_as[case.label_map],
            str(case.image),
            str(case.label),
            _file_stamp(str(case.image), str(case.label)),
            [organ in case.label_map.organs for organ in organs],
        ]
        for case in cases
    ]
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:24]


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


def persistent_cache_dir(data: DataConfig) -> Path | None:
    """Where preprocessed cases are kept between runs (`data.persistent_cache`), or None for none."""
    return Path(data.cache_dir) / "preprocessed" if data.persistent_cache else None


def load_cases(
    cases: Sequence[SiteCase],
    organs: Sequence[str],
    hu_window: tuple[float, float],
    preprocess: PreprocessConfig | None = None,
    cache_dir: Path | None = None,
) -> list[dict]:
    """Load cases in the given order, with their `labelled` masks; one MONAI dataset per label map.

    With `cache_dir`, preprocessed cases are also kept on disk (MONAI PersistentDataset, read back
    with torch.load(weights_only=True)), so a later study, resume or sweep cell with the same data
    and preprocessing loads them in about a millisecond each instead of decoding and transforming the
    NIfTI again. The cache folder is keyed by everything the result depends on, and each case by its
    files' paths, sizes and modification times, so an edited file is preprocessed again.
    """
    organs = list(organs)
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
        chain = preprocessing(table, hu_window, preprocess)
        try:
            if cache_dir is None:
                dataset = CacheDataset(items, chain, progress=False, num_workers=0)
            else:
                folder = Path(cache_dir) / _preprocessing_key(table, hu_window, preprocess)
                stamped = [{**item, "stamp": _file_stamp(item["image"], item["label"])} for item in items]
                dataset = PersistentDataset(stamped, chain, cache_dir=folder, track_meta=True)
            labelled = torch.tensor([organ in label_map.organs for organ in organs], dtype=torch.bool)
            for position, i in enumerate(indices):
                loaded[i] = {**dataset[position], "labelled": labelled}  # PersistentDataset works here
        except RuntimeError as error:  # MONAI wraps errors raised inside transforms
            cause = error.__cause__
            while cause is not None and not isinstance(cause, DataError):
                cause = cause.__cause__
            if cause is None:
                raise
            raise DataError(f"site '{cases[indices[0]].site}' ({cases[indices[0]].source}): {cause}") from None
    return loaded


# Bump when the preprocessing chain changes in a way its config does not show, to retire old caches.
_CACHE_VERSION = 1


def _preprocessing_key(table: np.ndarray, hu_window: tuple[float, float], preprocess: PreprocessConfig | None) -> str:
    """A folder name determined by everything a preprocessed case depends on besides its files."""
    what = {
        "version": _CACHE_VERSION,
        "labels": table.tolist(),
        "hu_window": list(hu_window),
        "preprocess": to_data(preprocess or PreprocessConfig()),
        "monai": monai.__version__,
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def _file_stamp(*paths: str) -> str:
    """Size and modification time of each file: a changed file gets a new cache entry."""
    return ";".join(f"{os.stat(p).st_size}:{os.stat(p).st_mtime_ns}" for p in paths)


class PatchSampler:
    """Random training patches of a client's cases, reproducible from a seed.

    A fraction `foreground_ratio` of patches is centred on a labelled voxel (MONAI
    RandCropByPosNegLabeld), the rest anywhere in the volume. Each case carries its own
    `labelled` organ mask, so a client may pool cases from sites with different label sets.
    Optional augmentation changes each patch after sampling, from its own random stream, so it
    never changes which patches are drawn. The MONAI transforms are built once and reused for
    every client a hospital actor trains; batches of one client are drawn at a time.
    """

    def __init__(
        self,
        patch_size: tuple[int, int, int],
        foreground_ratio: float,
        batch_size: int,
        augment: AugmentConfig | None = None,
    ) -> None:
        self.batch_size = batch_size
        self.crop = Compose(
            [
                SpatialPadd(keys=["image", "label"], spatial_size=patch_size),
                RandCropByPosNegLabeld(
                    keys=["image", "label"],
                    label_key="label",
                    spatial_size=patch_size,
                    pos=foreground_ratio,
                    neg=1.0 - foreground_ratio,
                    num_samples=1,
                    allow_smaller=False,
                ),
            ]
        )
        self.augment = augmentation(augment) if augment is not None and augment.enabled else None

    def batches(self, cases: list[dict], seed: int) -> Iterator[Batch]:
        """Endless batches of `cases`; the same cases and seed give the same patches and augmentations."""
        if not cases:
            raise DataError("a hospital has no cases")
        # Only what training reads: the original-grid labels (for evaluation) need not stay in memory.
        # Arrays may be read-only views into Ray's object store: nothing here writes to them.
        cases = [{key: _tensor(case[key]) for key in TRAINING_KEYS} for case in cases]
        rng = np.random.default_rng(seed)
        self.crop.set_random_state(seed=int(rng.integers(2**31)))
        if self.augment is not None:
            # A stream apart from `rng`: turning augmentation on leaves the cases and patches as they were.
            stream = np.random.default_rng([seed, 1])
            self.augment.set_random_state(seed=int(stream.integers(2**31)))
        while True:
            picks = rng.integers(len(cases), size=self.batch_size)
            patches = [self.crop({"image": cases[i]["image"], "label": cases[i]["label"]})[0] for i in picks]
            if self.augment is not None:
                patches = [self.augment(p) for p in patches]
            yield Batch(  # plain tensors: MetaTensor's per-op bookkeeping would slow every layer
                image=_plain(torch.stack([torch.as_tensor(p["image"]) for p in patches]).float()),
                label=_plain(torch.stack([torch.as_tensor(p["label"]) for p in patches]).long()),
                labelled=torch.stack([cases[i]["labelled"] for i in picks]),
            )


TRAINING_KEYS = ("image", "label", "labelled")  # what training reads of a case


def training_arrays(cases: list[dict]) -> list[dict[str, np.ndarray]]:
    """What training needs of each loaded case, as numpy arrays (Ray stores these zero-copy)."""
    return [{key: np.asarray(case[key]) for key in TRAINING_KEYS} for case in cases]


def _tensor(value) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        with warnings.catch_warnings():  # read-only object-store arrays: never written, so no copy
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(value)
    return value


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.as_tensor() if isinstance(tensor, MetaTensor) else tensor


def augmentation(cfg: AugmentConfig) -> Compose:
    """Random flips, intensity scale and shift, rotation and zoom of an image/label patch."""
    keys = ["image", "label"]
    steps: list = [RandFlipd(keys=keys, prob=cfg.flip_prob, spatial_axis=axis) for axis in range(3)]
    steps += [
        RandScaleIntensityd(keys="image", factors=cfg.intensity_scale, prob=cfg.intensity_prob),
        RandShiftIntensityd(keys="image", offsets=cfg.intensity_shift, prob=cfg.intensity_prob),
    ]
    if cfg.affine_prob > 0:
        angle = float(np.deg2rad(cfg.rotate_deg))
        steps.append(
            RandAffined(
                keys=keys,
                prob=cfg.affine_prob,
                rotate_range=(angle, angle, angle),
                scale_range=(cfg.zoom, cfg.zoom, cfg.zoom),
                mode=("bilinear", "nearest"),
                padding_mode=("border", "zeros"),  # image edges continue; labels outside are background
            )
        )
    return Compose(steps)
