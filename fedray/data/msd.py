"""Read a Medical Segmentation Decathlon folder: its cases, and which study organs its labels hold."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fedray.errors import DataError
from fedray.organs import STRUCTURES


@dataclass(frozen=True)
class Case:
    """One image/label pair on disk."""

    case_id: str
    image: Path
    label: Path


@dataclass(frozen=True)
class MsdSite:
    """An MSD folder: its cases and the map from its label values to global organ names."""

    folder: Path
    cases: tuple[Case, ...]
    label_names: dict[int, str]
    label_values: frozenset[int] = frozenset()  # every value dataset.json's labels map lists

    @property
    def organs(self) -> tuple[str, ...]:
        """Global organs (and tumours) this site annotates, in the study's vocabulary order."""
        named = set(self.label_names.values())
        return tuple(o for o in STRUCTURES if o in named)


def read_site(folder: str | Path, require_files: bool = True) -> MsdSite:
    """Read `folder/dataset.json` and (unless `require_files` is false) check that every listed file exists.

    The organs come from `fedray.organs` when present (fedray-written folders), else from the
    `labels` map's names that are global organ or tumour names.

    Raises:
        DataError: no folder, no or malformed dataset.json, missing files, or no cases.
    """
    folder = Path(folder)
    manifest = folder / "dataset.json"
    if not folder.is_dir():
        raise DataError(f"Data folder '{folder}' does not exist.")
    if not manifest.is_file():
        raise DataError(
            f"Data folder '{folder}' has no dataset.json. fedray reads the Medical Segmentation "
            "Decathlon layout: dataset.json, imagesTr/ and labelsTr/."
        )
    try:  # not load_decathlon_datalist/_properties: they parse the JSON 2-3 times (2x slower) and normpath ".."
        meta = json.loads(manifest.read_text())
        labels = {int(value): str(name) for value, name in meta.get("labels", {}).items()}
        values = frozenset(labels)
        entries = [(e["image"], e["label"]) for e in meta["training"]]
        declared = meta.get("fedray", {}).get("organs")
    except (json.JSONDecodeError, KeyError, ValueError, TypeError, AttributeError) as error:
        raise DataError(f"'{manifest}' is not a valid MSD dataset.json ({type(error).__name__}: {error}).") from None
    if declared is not None:
        labels = {v: n for v, n in labels.items() if n in declared or v == 0}
    cases = []
    for image_name, label_name in entries:
        image, label = folder / image_name, folder / label_name
        for path in (image, label) if require_files else ():
            if not path.is_file():
                raise DataError(f"'{manifest}' lists '{path}', which does not exist.")
        cases.append(Case(case_id=image.name.split(".")[0], image=image, label=label))
    if not cases:
        raise DataError(f"'{manifest}' lists no training cases.")
    return MsdSite(folder=folder, cases=tuple(cases), label_names=labels, label_values=values)


def manifest_sha256(folder: str | Path, digest: Callable[[Path], bytes]) -> str:
    """SHA-256 of a folder's dataset.json and of every image and label file it lists.

    Hashes file contents (`digest` gives a file's SHA-256), so two folders with the same manifest but
    different voxels differ.
    """
    site = read_site(folder)
    combined = hashlib.sha256((Path(folder) / "dataset.json").read_bytes())
    for case in site.cases:
        for path in (case.image, case.label):
            combined.update(digest(path))
    return combined.hexdigest()
