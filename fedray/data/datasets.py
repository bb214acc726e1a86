"""Per-hospital and test datasets: MONAI transforms, cached once, and seeded random patch batches."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from monai.data import CacheDataset
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    Lambdad,
    LoadImaged,
    Orientationd,
    RandCropByPosNegLabeld,
    ScaleIntensityRanged,
    SpatialPadd,
)

from fedray.config import DataConfig, SiteConfig
from fedray.data.sites import LabelMap, SiteCase, read_site_cases
from fedray.errors import DataError
from fedray.strategies.base import Batch

if TYPE_CHECKING:
    from fedray.data.federation import Hospital


def label_lookup(label_names: dict[int, str], organs: Sequence[str]) -> np.ndarray:
    """Table mapping a site's label values to study indices (organ k -> k+1; others -> 0)."""
    table = np.zeros(max([0, *label_names]) + 1, dtype=np.int64)
    for value, name in label_names.items():
        if name in organs:
            table[value] = organs.index(name) + 1
    return table


def preprocessing(table: np.ndarray, hu_window: tuple[float, float]) -> Compose:
    """Deterministic chain, cached per case: load, RAS, HU window to [-1, 1], study labels."""

    def to_study_labels(label: torch.Tensor) -> torch.Tensor:
        values = label.long()
        if int(values.max()) >= len(table) or int(values.min()) < 0:
            raise DataError(f"label value {int(values.max())} is not in the site's label map")
        return torch.as_tensor(table)[values].to(torch.uint8)  # 7 organs fit; 8x less memory

    low, high = hu_window
    return Compose(
        [
            LoadImaged(keys=["image", "label"], image_only=True),
            EnsureChannelFirstd(keys=["image", "label"]),
            Orientationd(keys=["image", "label"], axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
            ScaleIntensityRanged(keys="image", a_min=low, a_max=high, b_min=-1.0, b_max=1.0, clip=True),
            Lambdad(keys="label", func=to_study_labels),
            EnsureTyped(keys=["image", "label"], track_meta=False),
        ]
    )


def load_hospital_cases(hospital: Hospital, data: DataConfig) -> list[dict]:
    """Load and preprocess a hospital's cases once, each through its own site's label map (the actor's loader)."""
    return load_cases(hospital.cases, data.organs, data.hu_window)


def load_folder(folder: Path, organs: Sequence[str], hu_window: tuple[float, float]) -> list[dict]:
    """Load and preprocess every case of an MSD folder once (the test set)."""
    return load_cases(read_site_cases(SiteConfig(path=str(folder)), require_files=True).cases, organs, hu_window)


def load_cases(cases: Sequence[SiteCase], organs: Sequence[str], hu_window: tuple[float, float]) -> list[dict]:
    """Load cases (MONAI CacheDataset, one per label map), in the given order, with their `labelled` masks."""
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
        # Values the site knows but does not train on map to background, like unlabelled organs.
        table = label_lookup({**dict.fromkeys(label_map.values, ""), **dict(label_map.names)}, organs)
        try:
            dataset = CacheDataset(items, preprocessing(table, hu_window), progress=False, num_workers=0)
        except RuntimeError as error:  # MONAI wraps errors raised inside transforms
            cause = error.__cause__
            while cause is not None and not isinstance(cause, DataError):
                cause = cause.__cause__
            if cause is None:
                raise
            raise DataError(f"site '{cases[indices[0]].site}' ({cases[indices[0]].source}): {cause}") from None
        labelled = torch.tensor([organ in label_map.organs for organ in organs], dtype=torch.bool)
        for position, i in enumerate(indices):
            loaded[i] = {**dataset[position], "labelled": labelled}
    return loaded


class PatchSampler:
    """Random training patches of one client's cases, reproducible from a seed.

    A fraction `foreground_ratio` of patches is centred on a labelled voxel (MONAI
    RandCropByPosNegLabeld), the rest anywhere in the volume. Each case carries its own
    `labelled` organ mask, so a client may pool cases from sites with different label sets.
    """

    def __init__(
        self,
        cases: list[dict],
        patch_size: tuple[int, int, int],
        foreground_ratio: float,
        batch_size: int,
    ) -> None:
        if not cases:
            raise DataError("a hospital has no cases")
        self.cases = cases
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

    def batches(self, seed: int) -> Iterator[Batch]:
        """Endless batches; the same seed gives the same cases and patches."""
        rng = np.random.default_rng(seed)
        self.crop.set_random_state(seed=int(rng.integers(2**31)))
        while True:
            picks = rng.integers(len(self.cases), size=self.batch_size)
            patches = [self.crop({"image": self.cases[i]["image"], "label": self.cases[i]["label"]})[0] for i in picks]
            yield Batch(
                image=torch.stack([torch.as_tensor(p["image"]) for p in patches]).float(),
                label=torch.stack([torch.as_tensor(p["label"]) for p in patches]).long(),
                labelled=torch.stack([self.cases[i]["labelled"] for i in picks]),
            )
