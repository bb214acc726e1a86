"""Check real cases before a study starts: files present, readable, on one grid, finite, labels in the map."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import nibabel as nib
import numpy as np

from fedray.atomic import atomic_write_text
from fedray.data.case_store import Recipe, case_key, file_stamp
from fedray.data.sites import SiteCase
from fedray.errors import ConfigError, DataError
from fedray.organs import TUMOURS

if TYPE_CHECKING:
    from fedray.config import DataConfig

# Affines of an image and its label may differ by float rounding in the writer; 1e-3 mm is far
# below any voxel size, yet catches a shifted or flipped label.
_AFFINE_TOLERANCE_MM = 1e-3
# Under data.cache_dir, beside the case store ("cases"): one file per case that passed in full.
CHECKS_FOLDER = "case_checks"


@dataclass(frozen=True)
class BadCase:
    """A case left out of a study (data.on_bad_case: skip), and why."""

    site: str
    case: str
    file: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        """{site, case, file, reason}, for summary.json and MLflow."""
        return asdict(self)

    def message(self) -> str:
        """One sentence naming the case, its site and the file."""
        return f"case '{self.case}' of site '{self.site}': '{self.file}' {self.reason}"


@dataclass(frozen=True)
class PassedChecks:
    """The cases that passed the full check, remembered so that a later start reads only their headers.

    One small JSON file per case under data.cache_dir/case_checks, named by the case store's key
    (`case_store.case_key`: the files' paths, sizes and modification times, the label map as the
    study uses it, the preprocessing), so an edited file, another label map or another study
    preprocessing is checked in full again. The file also holds what the check read that the key
    does not name (every value the site's label map knows, the study organs, the stamps), compared
    whole on use. Only passes are remembered: a bad case is read again, and so reported again.
    """

    folder: Path
    recipe: Recipe

    @classmethod
    def of(cls, data: DataConfig) -> PassedChecks:
        return cls(Path(data.cache_dir) / CHECKS_FOLDER, Recipe.of(data))

    def entry(self, case: SiteCase, organs: Sequence[str]) -> tuple[Path, dict]:
        """Where the case's pass would be kept, and what it must say (the files' stamps read now)."""
        checked = {
            "site": case.site,
            "case": case.case_id,
            "image": str(case.image),
            "label": str(case.label),
            "stamps": [file_stamp(case.image), file_stamp(case.label)],
            "label_values": list(case.label_map.values),
            "label_names": [list(pair) for pair in case.label_map.names],
            "declared": list(case.label_map.organs),
            "organs": list(organs),
        }
        return self.folder / f"{case_key(case, self.recipe)}.json", checked

    @staticmethod
    def holds(path: Path, checked: dict) -> bool:
        try:
            return json.loads(path.read_text()) == checked
        except (OSError, ValueError):  # none yet, or a damaged file: check in full (and rewrite it)
            return False

    @staticmethod
    def remember(path: Path, checked: dict) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(checked, indent=1))
        except OSError:  # a read-only data.cache_dir (a shared store): the case is checked in full next time
            pass


def check_cases(
    cases: Sequence[SiteCase],
    organs: Sequence[str],
    on_bad_case: Literal["fail", "skip"],
    passed: PassedChecks | None = None,
) -> tuple[list[SiteCase], list[BadCase]]:
    """Split `cases` into good ones and bad ones, reading the files in a few threads.

    With `passed`, a case that passed before with the same files (path, size and modification
    time), label map, organs and preprocessing has only its headers read (existence, shape,
    affine); every other case is read in full and, if good, remembered there.

    An organ a site declares (and the study trains) with no voxels in a case makes that case bad:
    the case would teach that the organ is absent. Judged per case, so one case without a
    gallbladder does not cost the whole site; a wrong label map still empties every case. Tumours
    (`fedray.organs.TUMOURS`) are labelled "where present", so a case without one is fine.

    Raises:
        DataError: with on_bad_case 'fail', the first bad case in listing order.
    """
    good, bad = [], []
    workers = max(1, min(4, os.cpu_count() or 1, len(cases)))
    pool = ThreadPoolExecutor(max_workers=workers)  # zlib and numpy release the GIL while reading
    try:
        for case, problem in zip(cases, pool.map(lambda c: case_problem(c, organs, passed), cases)):
            if problem is None:
                good.append(case)
            elif on_bad_case == "fail":
                raise DataError(
                    f"Bad {problem.message()}. Fix or remove the case, or set data.on_bad_case=skip "
                    "to leave bad cases out of the study (they are then listed with the run)."
                )
            else:
                bad.append(problem)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return good, bad


def case_problem(case: SiteCase, organs: Sequence[str], passed: PassedChecks | None = None) -> BadCase | None:
    """What is wrong with one case, or None: headers first, then (unless `passed` holds the case)
    the label and image voxels."""

    def bad(path: object, reason: str) -> BadCase:
        return BadCase(case.site, case.case_id, str(path), reason)

    for path in (case.image, case.label):
        if not path.is_file():
            return bad(path, f"does not exist (listed in '{case.source}')")
    headers = {}
    for path in (case.image, case.label):
        try:
            headers[path] = nib.load(path)
        except Exception as error:  # nibabel raises many types (ImageFileError, OSError, EOFError, ...)
            return bad(path, f"cannot be read as NIfTI ({type(error).__name__}: {error})")
    image, label = headers[case.image], headers[case.label]
    if _grid(image.shape) != _grid(label.shape) or len(_grid(image.shape)) != 3 or 0 in image.shape:
        return bad(case.label, f"has shape {label.shape}, but its image '{case.image}' has {image.shape} "
                               "(both must be the same non-empty 3-D grid)")
    if not np.allclose(image.affine, label.affine, rtol=0, atol=_AFFINE_TOLERANCE_MM):
        return bad(case.label, f"has a different affine (orientation, spacing or origin) than its image "
                               f"'{case.image}' ({_rows(label.affine)} vs {_rows(image.affine)})")
    # Stamped before the voxels are read: a file changed meanwhile has a new stamp, so is read again next time.
    record = passed.entry(case, organs) if passed is not None else None
    if record is not None and passed.holds(*record):
        return None
    problem = _voxel_problem(case, image, label, organs)
    if problem is None and record is not None:
        passed.remember(*record)
    return problem


def _voxel_problem(case: SiteCase, image, label, organs: Sequence[str]) -> BadCase | None:
    """What is wrong with a case's label and image voxels (both files read in full), or None."""

    def bad(path: object, reason: str) -> BadCase:
        return BadCase(case.site, case.case_id, str(path), reason)

    try:
        labels = np.asanyarray(label.dataobj)
    except Exception as error:  # truncated or corrupt compressed data
        return bad(case.label, f"cannot be read in full ({type(error).__name__}: {error})")
    problem = _label_problem(labels, case, organs)
    if problem:
        return bad(case.label, problem)
    del labels
    try:
        voxels = np.asanyarray(image.dataobj)
    except Exception as error:
        return bad(case.image, f"cannot be read in full ({type(error).__name__}: {error})")
    if voxels.dtype.kind == "f":
        nonfinite = voxels.size - int(np.count_nonzero(np.isfinite(voxels)))
        if nonfinite:
            return bad(case.image, f"has {nonfinite} NaN or infinite voxel(s)")
    return None


def _label_problem(labels: np.ndarray, case: SiteCase, organs: Sequence[str]) -> str | None:
    """Why a label volume cannot be trained on: non-integer values, values outside the map, empty organs."""
    if labels.dtype.kind == "f":
        if not np.isfinite(labels).all():
            return "has NaN or infinite voxels (a label map holds whole numbers)"
        if not np.array_equal(labels, np.round(labels)):
            return "holds fractional values (a label map holds whole numbers)"
    values = labels.astype(np.int64, copy=False).ravel()
    low, high = int(values.min()), int(values.max())
    if low >= 0 and high < 2**20:
        counts = np.bincount(values, minlength=high + 1)  # linear time, unlike np.unique's sort
        present = {int(v): int(counts[v]) for v in np.flatnonzero(counts)}
    else:
        found, counts = np.unique(values, return_counts=True)
        present = {int(v): int(n) for v, n in zip(found, counts)}
    label_map = case.label_map
    unknown = sorted(set(present) - set(label_map.values))
    if unknown:
        return (
            f"holds label value(s) {', '.join(map(str, unknown))} that are not in the label map of site '{case.site}' "
            f"(known values: {', '.join(map(str, label_map.values))}). Map them in the site's labels "
            "(null for values not to train on)"
        )
    empty = [
        organ for organ in label_map.organs
        if organ in organs and organ not in TUMOURS  # a tumour is labelled where present
        and not any(present.get(v, 0) for v in label_map.values_of(organ))
    ]
    if empty:
        return (
            f"has no {', '.join(empty)} voxels, but site '{case.site}' declares it annotates "
            f"{', '.join(empty)} (a wrong label map, or an organ missing from this case)"
        )
    return None


def _grid(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The spatial shape: trailing singleton axes (some writers add them) dropped."""
    shape = tuple(shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def _rows(affine: np.ndarray) -> str:
    """The affine's top three rows on one line, for a one-paragraph message."""
    return str(np.round(affine[:3], 3).tolist())


def resampled_size(
    shape: Sequence[int], affine: np.ndarray, spacing: Sequence[float] | None
) -> tuple[int, int, int]:
    """A volume's size in voxels as preprocessing makes it, from its header alone: reoriented to RAS,
    then (with `spacing`) resampled as MONAI's Spacing sizes it, round((n - 1) * s / t + 1) per axis
    (s the voxel size along the axis, t the target)."""
    ornt = nib.orientations.io_orientation(affine)  # array axis i becomes RAS axis ornt[i, 0]
    sizes = np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))  # mm per array axis
    ras_shape, ras_sizes = [0, 0, 0], [0.0, 0.0, 0.0]
    for axis, (target_axis, _) in enumerate(ornt[:3]):
        ras_shape[int(target_axis)], ras_sizes[int(target_axis)] = int(shape[axis]), float(sizes[axis])
    if spacing is None:
        return tuple(ras_shape)
    return tuple(int(np.round((n - 1) * s / t + 1)) for n, s, t in zip(ras_shape, ras_sizes, spacing))


def check_volume_sizes(
    key: str, window: Sequence[int], cases: Sequence[SiteCase], spacing: Sequence[float] | None, use: str
) -> None:
    """Refuse a window (`key`: data.patch_size or eval.roi_size) larger in some axis than the smallest
    of `cases` after preprocessing, read from the NIfTI headers only (no voxel data).

    Checked before the body crop (data.preprocess.crop_foreground), which can only shrink a volume:
    this is the size every volume has at least, so a window that passes can still exceed a cropped
    volume, which the patch sampler then pads. Unreadable or missing files are left to `check_cases`.

    Raises:
        ConfigError: naming the key, the smallest case in the offending axis and its size.
    """
    smallest: list[tuple[int, SiteCase] | None] = [None, None, None]
    for case in cases:
        try:
            header = nib.load(case.image)
        except Exception:  # noqa: BLE001 - reported with its reason by check_cases
            continue
        grid = _grid(header.shape)
        if len(grid) != 3:
            continue
        size = resampled_size(grid, header.affine, spacing)
        for axis in range(3):
            if smallest[axis] is None or size[axis] < smallest[axis][0]:
                smallest[axis] = (size[axis], case)
    for axis, found in enumerate(smallest):
        if found is None or window[axis] <= found[0]:
            continue
        size, case = found
        fits = [s[0] for s in smallest if s is not None]
        after = f"resampling to data.preprocess.spacing {list(spacing)} mm" if spacing else "reorientation to RAS"
        raise ConfigError(
            f"{key} {list(window)} is larger than case '{case.case_id}' of site '{case.site}' ('{case.image}'), "
            f"which has {size} voxels in axis {axis} after {after}: a {use} larger than a volume would be mostly "
            f"padding, so it is refused rather than padded. Use a {key} of at most {fits} (the smallest volume "
            f"in each axis), or a {'finer ' if spacing else ''}data.preprocess.spacing."
        )
