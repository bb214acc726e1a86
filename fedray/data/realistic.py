"""Real-anatomy cohort: one real CT, randomly deformed into partially labelled MSD sites and a test set."""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter, map_coordinates

from fedray.data.msd_writer import start_msd_folder, write_msd_case, write_msd_manifest
from fedray.data.phantom import PhantomSpec, ScannerProfile, random_scanner
from fedray.errors import ConfigError
from fedray.organs import ORGANS, organ_label

_HU_RANGE = (-1024, 3071)  # what a 12-bit CT scanner stores
# Spawn keys under SeedSequence([seed]): site s draws its plan from (_PLAN_KEY,), its scanner from
# (_SCANNER_KEY, s) and case i from (_CASE_KEY, s, i); test case i from (_TEST_KEY, i). Separate
# streams mean adding sites or cases never changes the ones already drawn.
_PLAN_KEY = 0
_SCANNER_KEY = 1
_NOISE_SIGMA = (5.0, 25.0)  # HU; the source CT already carries its own noise
_CASE_KEY = 2
_TEST_KEY = 3


@dataclass(frozen=True)
class CohortSpec:
    """What `build_cohort` writes.

    Attributes:
        shape: output voxels (x, y, z); the default 88 x 72 x 32 at 4 x 4 x 3 mm spans 352 x 288 x 96
            mm: the source's 122 x 101 x 30 voxels at 3 mm (366 x 303 x 90 mm), centred on its organs
            (288 x 195 x 90 mm), with room for the random shift and scale. About as many voxels as
            the phantom's 64 x 64 x 48, so CPU studies cost the same.
        spacing: output voxel size in mm.
        sites: number of partially labelled sites.
        cases_per_site: deformed cases per site.
        test_cases: fully labelled held-out cases.
        max_organs_per_site: each site labels between 1 and this many organs (more only when there
            are fewer sites than organs, so that every organ is labelled somewhere).
        seed: data seed; the same seed writes the same files.
        deform_mm: largest smooth displacement of the elastic deformation, mm.
        smoothness_mm: Gaussian width of the displacement field, mm (larger is smoother).
        shift_mm: largest random shift of the crop centre, in-plane (z gets a quarter of it).
    """

    shape: tuple[int, int, int] = (88, 72, 32)
    spacing: tuple[float, float, float] = (4.0, 4.0, 3.0)
    sites: int = 7
    cases_per_site: int = 4
    test_cases: int = 4
    max_organs_per_site: int = 2
    seed: int = 0
    deform_mm: float = 6.0
    smoothness_mm: float = 20.0
    shift_mm: float = 12.0

    def __post_init__(self) -> None:
        PhantomSpec(self.shape, self.spacing)  # validates the grid (3 sizes >= 16, positive spacing)
        for name in ("sites", "cases_per_site", "test_cases", "max_organs_per_site"):
            if getattr(self, name) < 1:
                raise ConfigError(f"Realistic cohort: {name} must be >= 1, got {getattr(self, name)}.")
        if self.seed < 0:
            raise ConfigError(f"Realistic cohort: seed must be >= 0, got {self.seed}.")
        if self.deform_mm < 0 or self.smoothness_mm <= 0 or self.shift_mm < 0:
            raise ConfigError("Realistic cohort: deform_mm and shift_mm must be >= 0, smoothness_mm > 0.")

    @property
    def grid(self) -> PhantomSpec:
        """The output voxel grid (and its centred RAS affine)."""
        return PhantomSpec(self.shape, self.spacing)


@dataclass(frozen=True)
class SitePlan:
    """One site: the organs it labels and the label value it gives each."""

    name: str
    label_values: dict[str, int]  # organ -> value in this site's label files

    @property
    def organs(self) -> tuple[str, ...]:
        return tuple(o for o in ORGANS if o in self.label_values)


def plan_sites(spec: CohortSpec, organs: Sequence[str] = ORGANS) -> list[SitePlan]:
    """Which organs each site labels, and its own label numbering.

    Organ j goes to site j mod n (so every organ is labelled), then each site draws 0 or more
    extra organs up to `max_organs_per_site`. Each site numbers its organs with distinct values
    drawn from 1..len(ORGANS)+2, so numberings differ between sites as they do between hospitals.
    """
    if not organs:
        raise ConfigError("Realistic cohort: no study organ to label.")
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed], spawn_key=(_PLAN_KEY,)))
    primary: list[list[str]] = [[] for _ in range(spec.sites)]
    for j, organ in enumerate(organs):
        primary[j % spec.sites].append(organ)
    width = max(1, len(str(spec.sites - 1)))
    plans = []
    for index, chosen in enumerate(primary):
        others = [o for o in organs if o not in chosen]
        room = max(0, spec.max_organs_per_site - len(chosen))
        extra = int(rng.integers(0, min(room, len(others)) + 1))
        chosen = chosen + list(rng.choice(others, size=extra, replace=False)) if extra else chosen
        if not chosen:  # more sites than organs: a site with no primary organ labels a random one
            chosen = [str(rng.choice(list(organs)))]
        values = rng.choice(np.arange(1, len(ORGANS) + 3), size=len(chosen), replace=False)
        plans.append(
            SitePlan(f"site_{index:0{width}d}", {str(o): int(v) for o, v in zip(chosen, values)})
        )
    return plans


def deform_case(
    rng: np.random.Generator,
    image: np.ndarray,
    label: np.ndarray,
    source_spacing: Sequence[float],
    spec: CohortSpec,
) -> tuple[np.ndarray, np.ndarray]:
    """One new case: random crop, scale, in-plane rotation and smooth elastic warp, in one resampling.

    Every output voxel is mapped to a source position (crop centre + rotated, scaled offset + a
    Gaussian-smoothed random displacement) and sampled there: the image linearly, the labels by
    nearest neighbour so they stay whole organ values. Outside the source, edge values repeat.

    Returns:
        (image in HU as float32, label as uint8), both of `spec.shape`.
    """
    shape, out_spacing = np.array(spec.shape), np.array(spec.spacing)
    source_spacing = np.asarray(source_spacing, dtype=float)
    # Crop centre: the organs' bounding-box centre (so every organ is in view), randomly shifted.
    organs = np.argwhere(label > 0)
    centre = (organs.min(0) + organs.max(0)) / 2 if len(organs) else (np.array(label.shape) - 1) / 2
    shift = rng.uniform(-1.0, 1.0, 3) * spec.shift_mm * np.array([1.0, 1.0, 0.25])
    angle = math.radians(rng.uniform(-8.0, 8.0))
    scale = rng.uniform(0.92, 1.08, 3)  # > 1 enlarges the anatomy
    c, s = math.cos(angle), math.sin(angle)
    rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    # Output positions in mm about the grid centre, then into the source's mm frame.
    offsets = np.stack(
        np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * d for n, d in zip(shape, out_spacing)], indexing="ij")
    )
    source_mm = np.einsum("ij,j...->i...", rotation / scale[None, :], offsets)
    source_mm += shift.reshape(3, 1, 1, 1) + _displacement(rng, spec)
    coordinates = centre.reshape(3, 1, 1, 1) + source_mm / source_spacing.reshape(3, 1, 1, 1)
    warped_image = map_coordinates(image.astype(np.float32), coordinates, order=1, mode="nearest")
    warped_label = map_coordinates(label, coordinates, order=0, mode="nearest")
    return warped_image.astype(np.float32), warped_label.astype(np.uint8)


def apply_scanner(rng: np.random.Generator, image: np.ndarray, scanner: ScannerProfile) -> np.ndarray:
    """Scanner gain, offset and Gaussian noise, rounded and clipped to 12-bit CT as int16."""
    noisy = image * scanner.hu_scale + scanner.hu_offset + rng.normal(0.0, scanner.noise_sigma, image.shape)
    return np.clip(np.rint(noisy), *_HU_RANGE).astype(np.int16)


def site_labels(label: np.ndarray, label_values: dict[str, int]) -> np.ndarray:
    """Study labels (organ k -> k+1) to a site's numbering; organs it does not label become 0."""
    table = np.zeros(len(ORGANS) + 1, dtype=np.uint8)
    for organ, value in label_values.items():
        table[organ_label(organ)] = value
    return table[label]


def build_cohort(
    out_dir: str | Path,
    image: np.ndarray,
    label: np.ndarray,
    source_spacing: Sequence[float],
    spec: CohortSpec = CohortSpec(),
    *,
    organs: Sequence[str] = ORGANS,
    provenance: dict | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[tuple[Path, SitePlan]], Path]:
    """Write `spec.sites` partially labelled MSD folders and a fully labelled `test` folder.

    Args:
        out_dir: parent folder; gets site_0 ... site_{n-1} and test.
        image: source CT in HU, RAS voxel order.
        label: source labels in study values (organ k -> k+1).
        source_spacing: source voxel size, mm.
        spec: sizes, counts and seed.
        organs: study organs present in the source (absent ones are never assigned to a site).
        provenance: recorded in every dataset.json under `fedray.source`.
        progress: called with (cases written, cases in all).

    Returns:
        ([(site folder, its plan)], test folder).
    """
    out_dir = Path(out_dir)
    plans = plan_sites(spec, organs)
    total = spec.sites * spec.cases_per_site + spec.test_cases
    done = 0
    common = {"generator": "realistic", "seed": spec.seed, "spec": asdict(spec), "source": provenance or {}}
    sites = []
    for index, plan in enumerate(plans):
        folder = start_msd_folder(out_dir / plan.name)
        scanner = random_scanner(_rng(spec.seed, _SCANNER_KEY, index), noise_sigma=_NOISE_SIGMA)
        training = []
        for i in range(spec.cases_per_site):
            rng = _rng(spec.seed, _CASE_KEY, index, i)
            warped, warped_label = deform_case(rng, image, label, source_spacing, spec)
            case = f"{plan.name}_{i:03d}"
            training.append(
                write_msd_case(folder, case, apply_scanner(rng, warped, scanner),
                               site_labels(warped_label, plan.label_values), spec.grid.affine)
            )
            done += 1
            if progress is not None:
                progress(done, total)
        labels = {str(v): o for o, v in sorted(plan.label_values.items(), key=lambda item: item[1])}
        write_msd_manifest(
            folder, name=plan.name, description=f"fedray realistic cohort, {plan.name}, labels: {', '.join(plan.organs)}",
            labels=labels, training=training,
            fedray={**common, "organs": list(plan.organs), "site_index": index, "scanner": asdict(scanner)},
        )
        sites.append((folder, plan))

    test_dir = start_msd_folder(out_dir / "test")
    training, scanners = [], {}
    for i in range(spec.test_cases):
        rng = _rng(spec.seed, _TEST_KEY, i)
        scanner = random_scanner(rng, noise_sigma=_NOISE_SIGMA)  # one per case: the test set mixes scanners
        warped, warped_label = deform_case(rng, image, label, source_spacing, spec)
        case = f"test_{i:03d}"
        keep = {o: organ_label(o) for o in organs}  # study numbering; absent organs stay 0
        training.append(
            write_msd_case(test_dir, case, apply_scanner(rng, warped, scanner),
                           site_labels(warped_label, keep), spec.grid.affine)
        )
        scanners[case] = asdict(scanner)
        done += 1
        if progress is not None:
            progress(done, total)
    write_msd_manifest(
        test_dir, name="test", description="fedray realistic cohort, fully labelled held-out test set",
        labels={str(organ_label(o)): o for o in organs}, training=training,
        fedray={**common, "organs": list(organs), "role": "test", "scanners": scanners},
    )
    return sites, test_dir


def copy_licence(licence: Path, out_dir: str | Path) -> None:
    """Ship the source's licence with the derived data (Apache 2.0 asks for it on redistribution)."""
    shutil.copyfile(licence, Path(out_dir) / "TotalSegmentator-LICENSE.txt")


def _displacement(rng: np.random.Generator, spec: CohortSpec) -> np.ndarray:
    """A smooth random displacement field (3, *shape) in mm, largest component `deform_mm`."""
    if spec.deform_mm == 0:
        return np.zeros((3, *spec.shape))
    sigma = [spec.smoothness_mm / d for d in spec.spacing]
    noise = rng.standard_normal((3, *spec.shape))
    field = np.stack([gaussian_filter(n, sigma, mode="reflect") for n in noise])
    peak = np.abs(field).max()
    return field * (spec.deform_mm * rng.uniform(0.5, 1.0) / peak) if peak > 0 else field


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed], spawn_key=key))
