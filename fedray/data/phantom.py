"""Synthetic abdominal CT phantom, written as one Medical Segmentation Decathlon folder per site.

Optionally with tumours ("+ tumour where present", as in the MOTS datasets): when a study names
tumours (`fedray.organs.TUMOURS`), each case holds each of them with probability
`TUMOUR_PREVALENCE`, as a small hypodense ellipsoid that lies wholly inside its host organ. Label maps
stay exclusive: a tumour voxel holds the tumour's value, so the host organ's label then means the
organ without its tumour. A site that labels the host but not the tumour sees those voxels as the
host organ (it has no tumour annotations); a site that labels neither sees background. Without
tumours every case is exactly what it was before tumours existed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fedray.config import PhantomConfig
from fedray.data.msd_writer import start_msd_folder, write_msd_case, write_msd_manifest
from fedray.errors import ConfigError, did_you_mean
from fedray.organs import ORGANS, STRUCTURES, TUMOUR_HOSTS, TUMOURS, organ_label

# Hounsfield units of the tissues that are not study organs.
_AIR_HU = -1000.0
_FAT_HU = -100.0
_SOFT_TISSUE_HU = 45.0
_VERTEBRAL_BODY_HU = 550.0
_VERTEBRAL_ARCH_HU = 700.0
_SPINAL_CANAL_HU = 15.0
_STOMACH_CONTENT_HU = 10.0
_HU_RANGE = (-1024, 3071)  # what a 12-bit CT scanner stores

# Anatomy is laid out for a reference body of these semi-axes (mm: half width, half depth, half
# height) and then stretched to each case's body, so organs stay inside any field of view.
_REFERENCE_BODY_MM = np.array([160.0, 120.0, 120.0])

# Spawn keys under a site's SeedSequence([seed, site_index]): case i draws from (_ANATOMY_KEY, i),
# the site's scanner from (_SCANNER_KEY,). The test set lives under SeedSequence([seed]) with its
# own keys, so it can never coincide with a hospital's stream.
_ANATOMY_KEY = 0
_SCANNER_KEY = 1
_TEST_ANATOMY_KEY = 2
_TEST_SCANNER_KEY = 3

# Tumours ("where present"): the fraction of cases that hold each one, its largest semi-axis (mm,
# drawn uniformly from the range) and how much darker than its host it is (HU, drawn uniformly).
TUMOUR_PREVALENCE = 0.65
_TUMOUR_RADIUS_MM = {
    "liver_tumour": (8.0, 22.0),
    "kidney_tumour": (6.0, 14.0),
    "pancreas_tumour": (5.0, 9.0),
}
_TUMOUR_DARKER_HU = (40.0, 60.0)
_TUMOUR_TEXTURE_HU = 6.0  # tissue heterogeneity inside the tumour, before the scanner's noise

# Bump whenever the generator writes other bytes for the same spec and seed: it is part of every
# phantom folder's cache key, so a cache written by an older generator is never reused.
GENERATOR_VERSION = 2


@dataclass(frozen=True)
class PhantomSpec:
    """Voxel grid of every phantom volume.

    Attributes:
        shape: voxels along x (patient right), y (anterior), z (superior).
        spacing: voxel size in mm along x, y, z; the default grid spans 384 x 320 x 240 mm.
    """

    shape: tuple[int, int, int] = PhantomConfig.shape  # the study config's phantom grid
    spacing: tuple[float, float, float] = PhantomConfig.spacing

    def __post_init__(self) -> None:
        shape, spacing = tuple(self.shape), tuple(self.spacing)
        if len(shape) != 3 or not all(
            isinstance(s, int | np.integer) and not isinstance(s, bool) and s >= 16 for s in shape
        ):
            raise ConfigError(f"PhantomSpec.shape must be 3 integers >= 16, got {self.shape!r}.")
        if len(spacing) != 3 or not all(
            isinstance(s, int | float | np.number)
            and not isinstance(s, bool)
            and math.isfinite(s)
            and s > 0
            for s in spacing
        ):
            raise ConfigError(
                f"PhantomSpec.spacing must be 3 positive numbers (mm), got {self.spacing!r}."
            )
        # Normalised so equal grids compare equal and share a repr (the data cache keys on it).
        object.__setattr__(self, "shape", tuple(int(s) for s in shape))
        object.__setattr__(self, "spacing", tuple(float(s) for s in spacing))

    @property
    def affine(self) -> np.ndarray:
        """Voxel-to-RAS+ affine in mm, with the volume centred on the world origin."""
        spacing = np.array(self.spacing)
        affine = np.diag([*spacing, 1.0])
        affine[:3, 3] = -(np.array(self.shape) - 1) / 2 * spacing
        return affine


@dataclass(frozen=True)
class ScannerProfile:
    """How one site's scanner distorts true HU: `hu * hu_scale + hu_offset + N(0, noise_sigma)`.

    Attributes:
        hu_scale: multiplicative calibration error.
        hu_offset: additive calibration error in HU.
        noise_sigma: standard deviation of the Gaussian image noise in HU.
    """

    hu_scale: float = 1.0
    hu_offset: float = 0.0
    noise_sigma: float = 15.0

    def __post_init__(self) -> None:
        if not self.hu_scale > 0:
            raise ConfigError(f"ScannerProfile.hu_scale must be > 0, got {self.hu_scale}.")
        if not self.noise_sigma >= 0:
            raise ConfigError(f"ScannerProfile.noise_sigma must be >= 0, got {self.noise_sigma}.")


@dataclass(frozen=True)
class _OrganShape:
    """An organ as a deformed, rotated ellipsoid in reference-body millimetres (RAS+)."""

    organ: str
    centre: tuple[float, float, float]
    radii: tuple[float, float, float]
    yaw_deg: float  # rotation about z of the ellipsoid's axes
    pitch_deg: float  # then about y: tilts the long axis up or down
    hu: float


# Paint order: later organs overwrite earlier ones where they touch, so the small organs that must
# never vanish (pancreas, gallbladder) come last, and the liver, which everything abuts, first.
_ANATOMY: tuple[_OrganShape, ...] = (
    _OrganShape("liver", (75.0, 10.0, 50.0), (70.0, 80.0, 60.0), -10.0, 0.0, 100.0),
    _OrganShape("stomach", (-50.0, 45.0, 50.0), (45.0, 35.0, 45.0), 20.0, 0.0, 30.0),
    _OrganShape("spleen", (-95.0, -40.0, 50.0), (30.0, 45.0, 45.0), -30.0, 0.0, 110.0),
    _OrganShape("kidney_right", (65.0, -55.0, -5.0), (28.0, 30.0, 50.0), 20.0, 0.0, 170.0),
    _OrganShape("kidney_left", (-65.0, -55.0, 5.0), (28.0, 30.0, 50.0), -20.0, 0.0, 170.0),
    # Long axis along x, from the head (patient right) to a tail rising back toward the spleen.
    _OrganShape("pancreas", (-20.0, 0.0, 5.0), (60.0, 12.0, 12.0), 20.0, 15.0, 90.0),
    _OrganShape("gallbladder", (55.0, 55.0, 10.0), (15.0, 15.0, 28.0), 0.0, 20.0, 10.0),
)


_ANATOMY_HU = {shape.organ: shape.hu for shape in _ANATOMY}


def scanner_for_site(seed: int, site_index: int) -> ScannerProfile:
    """The scanner of hospital `site_index`: deterministic in (seed, site_index), varied by site.

    Args:
        seed: the phantom's data seed (>= 0).
        site_index: the hospital's index (>= 0).

    Returns:
        hu_scale in [0.9, 1.1], hu_offset in [-20, 20] HU, noise_sigma in [8, 30] HU.

    Raises:
        ConfigError: a negative seed or site index.
    """
    _check_seed(seed, site_index)
    return random_scanner(
        np.random.default_rng(np.random.SeedSequence([seed, site_index], spawn_key=(_SCANNER_KEY,)))
    )


def generate_case(
    rng: np.random.Generator,
    spec: PhantomSpec,
    scanner: ScannerProfile,
    tumours: Sequence[str] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """Synthesise one abdominal CT volume and its full label map.

    Args:
        rng: source of the case's anatomy jitter, tumours and image noise.
        spec: voxel grid.
        scanner: calibration error and noise applied to the true HU.
        tumours: tumours (from `fedray.organs.TUMOURS`) this case may hold, each with probability
            `TUMOUR_PREVALENCE`, inside its host organ. Without tumours (the default) the case is
            the same, voxel for voxel, as before tumours existed; with them, everything but the
            tumours' own voxels is too.

    Returns:
        (image, label), both of shape `spec.shape`: image int16 HU clipped to [-1024, 3071]; label
        uint8 with value `organ_label(o)` on every voxel of organ or tumour `o` and 0 elsewhere
        (a tumour's voxels hold the tumour's value, not its host's).
    """
    image, label, _ = _generate_case(rng, spec, scanner, _check_tumours(tumours))
    return image, label


def _generate_case(
    rng: np.random.Generator, spec: PhantomSpec, scanner: ScannerProfile, tumours: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """`generate_case`, plus each present tumour's host organ."""
    axes = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(spec.shape, spec.spacing)]
    image = np.full(spec.shape, _AIR_HU, dtype=np.float32)
    label = np.zeros(spec.shape, dtype=np.uint8)

    body_semi_axes, interior = _paint_body(rng, axes, image)
    # Stretch factors from the reference body to this case's body and field of view.
    stretch = np.array([*body_semi_axes, axes[2][-1] + spec.spacing[2] / 2]) / _REFERENCE_BODY_MM
    spine = _paint_spine(rng, axes, stretch, image)
    # Organs live in the abdominal cavity: inside the fat ring, never in bone.
    allowed = interior & ~spine[:, :, None]

    shift_all = rng.normal(0.0, 5.0, 3)  # the whole abdomen moves together, organs a little more
    for shape in _ANATOMY:
        _paint_organ(rng, shape, shift_all, stretch, axes, allowed, image, label)

    image = image * scanner.hu_scale + scanner.hu_offset
    image += rng.normal(0.0, scanner.noise_sigma, spec.shape).astype(np.float32)
    # Tumours draw only after everything else, so they leave the rest of the case unchanged.
    hosts = _paint_tumours(rng, tumours, spec, scanner, image, label) if tumours else {}
    return np.clip(np.rint(image), *_HU_RANGE).astype(np.int16), label, hosts


def write_site(
    out_dir: Path,
    organs: Sequence[str],
    n_cases: int,
    *,
    seed: int,
    site_index: int,
    spec: PhantomSpec = PhantomSpec(),
    scanner: ScannerProfile | None = None,
    name: str | None = None,
    tumours: Sequence[str] | None = None,
) -> Path:
    """Write one hospital's MSD folder whose labels hold only the organs it annotates.

    Other organs are 0 in the label files, indistinguishable from background, as in real partially
    labelled datasets. Case i depends only on (seed, site_index, i, spec, tumours), so a hospital's
    data does not change with the number of other hospitals or its own organ list.

    Tumour voxels hold the tumour's value where the site labels the tumour; where it labels only
    the host organ they hold the host's value (a hospital without tumour annotations); else 0.

    Args:
        out_dir: folder to create (or overwrite) with dataset.json, imagesTr/ and labelsTr/.
        organs: organs (and tumours) this hospital labels, from `fedray.organs.STRUCTURES`.
        n_cases: number of cases (>= 1).
        seed: the phantom's data seed (>= 0).
        site_index: the hospital's index (>= 0).
        spec: voxel grid.
        scanner: the site's scanner; defaults to `scanner_for_site(seed, site_index)`.
        name: dataset name and case-id prefix; defaults to `site_<site_index>`.
        tumours: tumours the images hold (the study's tumours, whether or not this site labels
            them); defaults to the tumours in `organs`. It must include every tumour in `organs`.

    Returns:
        `out_dir`.

    Raises:
        ConfigError: unknown organ or tumour, no organs, a labelled tumour the images lack,
            n_cases < 1, or a negative seed or site index.
    """
    labelled = _check_organs(organs)
    tumours = _check_tumours(tuple(o for o in labelled if o in TUMOURS) if tumours is None else tumours)
    lacking = [o for o in labelled if o in TUMOURS and o not in tumours]
    if lacking:
        raise ConfigError(
            f"Site {site_index} labels {', '.join(lacking)}, but its images hold no such tumour "
            f"(tumours: {', '.join(tumours) or 'none'}). Add it to tumours."
        )
    _check_seed(seed, site_index)
    _check_cases(n_cases)
    scanner = scanner if scanner is not None else scanner_for_site(seed, site_index)
    name = name if name is not None else f"site_{site_index:03d}"
    keep = np.isin(np.arange(256), [organ_label(o) for o in labelled])  # lookup by label value

    out_dir = Path(out_dir)
    start_msd_folder(out_dir)
    training = []
    for i in range(n_cases):
        rng = np.random.default_rng(
            np.random.SeedSequence([seed, site_index], spawn_key=(_ANATOMY_KEY, i))
        )
        image, label, hosts = _generate_case(rng, spec, scanner, tumours)
        for tumour, host in hosts.items():
            if tumour not in labelled and host in labelled:  # no tumour annotations: it is the organ
                label[label == organ_label(tumour)] = organ_label(host)
        label[~keep[label]] = 0
        training.append(write_msd_case(out_dir, f"{name}_{i:03d}", image, label, spec.affine))

    write_msd_manifest(
        out_dir,
        name=name,
        description=f"fedray CT phantom, site {site_index}, labels: {', '.join(labelled)}",
        labels={str(organ_label(o)): o for o in labelled},
        training=training,
        fedray={
            "organs": list(labelled),
            "generator": "phantom",
            "seed": seed,
            "site_index": site_index,
            "scanner": asdict(scanner),
            "spacing": list(spec.spacing),
            "shape": list(spec.shape),
            **({"tumours": list(tumours)} if tumours else {}),  # absent: as before tumours existed
        },
    )
    return out_dir


def write_test_set(
    out_dir: Path,
    n_cases: int,
    *,
    seed: int,
    spec: PhantomSpec = PhantomSpec(),
    tumours: Sequence[str] = (),
) -> Path:
    """Write the fully labelled held-out set (all 7 organs, and `tumours` where present) in the MSD layout.

    Each case has its own random scanner from a stream no hospital uses, so the test set mixes
    scanners instead of matching any one hospital.

    Args:
        out_dir: folder to create (or overwrite).
        n_cases: number of cases (>= 1).
        seed: the phantom's data seed (>= 0).
        spec: voxel grid.
        tumours: the study's tumours; each case holds each with probability `TUMOUR_PREVALENCE`.

    Returns:
        `out_dir`.

    Raises:
        ConfigError: n_cases < 1, a negative seed, or an unknown tumour.
    """
    tumours = _check_tumours(tumours)
    structures = tuple(o for o in STRUCTURES if o in ORGANS or o in tumours)
    _check_seed(seed, site_index=0)
    _check_cases(n_cases)
    out_dir = Path(out_dir)
    start_msd_folder(out_dir)
    training, scanners = [], {}
    for i in range(n_cases):
        case_id = f"test_{i:03d}"
        scanner = random_scanner(
            np.random.default_rng(np.random.SeedSequence([seed], spawn_key=(_TEST_SCANNER_KEY, i)))
        )
        rng = np.random.default_rng(
            np.random.SeedSequence([seed], spawn_key=(_TEST_ANATOMY_KEY, i))
        )
        image, label, _ = _generate_case(rng, spec, scanner, tumours)
        training.append(write_msd_case(out_dir, case_id, image, label, spec.affine))
        scanners[case_id] = asdict(scanner)

    write_msd_manifest(
        out_dir,
        name="test",
        description="fedray synthetic abdominal CT phantom, fully labelled held-out test set",
        labels={str(organ_label(o)): o for o in structures},
        training=training,
        fedray={
            "organs": list(structures),
            "generator": "phantom",
            "role": "test",
            "seed": seed,
            "scanners": scanners,
            "spacing": list(spec.spacing),
            "shape": list(spec.shape),
            **({"tumours": list(tumours)} if tumours else {}),
        },
    )
    return out_dir


def random_scanner(rng: np.random.Generator, noise_sigma: tuple[float, float] = (8.0, 30.0)) -> ScannerProfile:
    """A scanner's gain (0.9-1.1), offset (+-20 HU) and noise sigma (HU, drawn from `noise_sigma`)."""
    # Rounded so the profile reads cleanly in dataset.json and round-trips exactly.
    return ScannerProfile(
        hu_scale=round(float(rng.uniform(0.9, 1.1)), 4),
        hu_offset=round(float(rng.uniform(-20.0, 20.0)), 2),
        noise_sigma=round(float(rng.uniform(*noise_sigma)), 2),
    )


def _paint_body(
    rng: np.random.Generator, axes: list[np.ndarray], image: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Paint fat and soft tissue; return the body's in-plane semi-axes (mm) and inside-fat mask."""
    x, y, z = axes
    half_fov = np.array([x[-1], y[-1]])
    semi_axes = half_fov * np.array([0.84, 0.76]) * rng.uniform(0.93, 1.03, 2)
    u, v = x[:, None] / semi_axes[0], y[None, :] / semi_axes[1]
    # Lumpy outline: an ellipse whose radius wobbles with the 2nd and 3rd angular harmonics.
    angle = np.arctan2(v, u)
    outline = np.ones_like(angle)
    for harmonic in (2, 3):
        outline += rng.uniform(0.0, 0.03) * np.cos(harmonic * angle + rng.uniform(0, 2 * np.pi))
    # The waist widens or narrows slowly along z.
    taper = 1.0 + rng.uniform(-0.04, 0.04) * z / z[-1]
    radius = np.sqrt(u**2 + v**2)[:, :, None] / taper[None, None, :]
    fat_mm = rng.uniform(10.0, 20.0)
    body = radius < outline[:, :, None]
    interior = radius < (outline - fat_mm / semi_axes.mean())[:, :, None]
    image[body] = _FAT_HU
    image[interior] = _SOFT_TISSUE_HU
    return semi_axes, interior


def _paint_spine(
    rng: np.random.Generator, axes: list[np.ndarray], stretch: np.ndarray, image: np.ndarray
) -> np.ndarray:
    """Paint a vertebra (body, arch, canal) through every slice; return its in-plane bone mask."""
    x, y = axes[0][:, None], axes[1][None, :]
    offset = rng.normal(0.0, 3.0, 2)

    def ellipse(centre: tuple[float, float], radii: tuple[float, float]) -> np.ndarray:
        cx, cy = (np.array(centre) + offset) * stretch[:2]
        rx, ry = np.array(radii) * stretch[:2]
        return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 < 1.0

    vertebral_body = ellipse((0.0, -62.0), (19.0, 15.0))
    canal = ellipse((0.0, -85.0), (7.0, 6.0))
    arch = ellipse((0.0, -90.0), (14.0, 10.0)) & ~canal & ~vertebral_body
    image[vertebral_body] = _VERTEBRAL_BODY_HU
    image[arch] = _VERTEBRAL_ARCH_HU
    image[canal] = _SPINAL_CANAL_HU
    return vertebral_body | arch | canal


def _paint_organ(
    rng: np.random.Generator,
    shape: _OrganShape,
    shift_all: np.ndarray,
    stretch: np.ndarray,
    axes: list[np.ndarray],
    allowed: np.ndarray,
    image: np.ndarray,
    label: np.ndarray,
) -> None:
    """Paint one organ as a jittered ellipsoid whose surface is deformed by low-frequency waves."""
    centre = (np.array(shape.centre) + shift_all + rng.normal(0.0, 4.0, 3)) * stretch
    radii = np.array(shape.radii) * rng.uniform(0.9, 1.1, 3) * stretch
    yaw = np.radians(shape.yaw_deg + rng.normal(0.0, 6.0))
    pitch = np.radians(shape.pitch_deg + rng.normal(0.0, 4.0))
    rotation = _rotation_z(yaw) @ _rotation_y(pitch)
    # Three plane waves over the unit ball, wavelengths ~2-4 radii: smooth bumps and dents.
    wave_amplitudes = rng.uniform(0.0, 0.05, 3)
    wave_vectors = rng.normal(size=(3, 3))
    wave_vectors *= (rng.uniform(1.5, 3.0, 3) / np.linalg.norm(wave_vectors, axis=1))[:, None]
    wave_phases = rng.uniform(0.0, 2 * np.pi, 3)
    hu = shape.hu + rng.normal(0.0, 4.0)

    # Only the voxels within the ellipsoid's bounding sphere are evaluated, which keeps this fast.
    reach = radii.max() * (1.0 + wave_amplitudes.sum())
    box = tuple(
        slice(int(np.searchsorted(a, c - reach)), int(np.searchsorted(a, c + reach, side="right")))
        for a, c in zip(axes, centre)
    )
    offsets = [
        (axes[d][box[d]] - centre[d]).reshape([-1 if k == d else 1 for k in range(3)])
        for d in range(3)
    ]
    # Local, radius-normalised coordinates: q = R^T (p - c) / r.
    local = [sum(rotation[d, k] * offsets[d] for d in range(3)) / radii[k] for k in range(3)]
    distance = np.sqrt(sum(q**2 for q in local))
    surface = 1.0 + sum(
        a * np.sin(sum(w[k] * local[k] for k in range(3)) + phase)
        for a, w, phase in zip(wave_amplitudes, wave_vectors, wave_phases)
    )
    inside = (distance < surface) & allowed[box]
    image[box][inside] = hu
    label[box][inside] = organ_label(shape.organ)
    if shape.organ == "stomach":
        # Fluid-filled lumen inside an enhancing wall; all of it is labelled stomach.
        image[box][inside & (distance < 0.7 * surface)] = _STOMACH_CONTENT_HU


def _paint_tumours(
    rng: np.random.Generator,
    tumours: tuple[str, ...],
    spec: PhantomSpec,
    scanner: ScannerProfile,
    image: np.ndarray,
    label: np.ndarray,
) -> dict[str, str]:
    """Paint each present tumour as an ellipsoid wholly inside its host; return tumour -> host.

    `image` already carries the scanner's calibration and noise, so tumour voxels get both here.
    Every tumour of the vocabulary takes one seed from `rng`, whether or not the study names it, so a
    tumour's presence, host, size and place do not change with the study's other tumours.
    """
    from scipy.ndimage import distance_transform_edt  # only tumour studies need it

    seeds = rng.integers(0, 2**63, size=len(TUMOURS))
    hosts = {}
    for tumour, seed in zip(TUMOURS, seeds):
        if tumour not in tumours:
            continue
        t_rng = np.random.default_rng(int(seed))
        if t_rng.random() >= TUMOUR_PREVALENCE:
            continue
        host = str(t_rng.choice(TUMOUR_HOSTS[tumour]))
        radius = t_rng.uniform(*_TUMOUR_RADIUS_MM[tumour])
        radii = radius * t_rng.uniform(0.7, 1.0, 3)
        darker = t_rng.uniform(*_TUMOUR_DARKER_HU)
        pick = t_rng.random()
        organ = label == organ_label(host)
        if not organ.any():
            continue
        # Distance (mm) from each host voxel to the nearest voxel that is not host: an ellipsoid
        # whose semi-axes are all shorter than that distance at its centre holds only host voxels.
        depth = distance_transform_edt(organ, sampling=spec.spacing)
        radii = radii * min(1.0, 0.9 * float(depth.max()) / radii.max())  # shrunk to fit a thin host
        centres = np.argwhere(depth > radii.max())
        centre = centres[min(int(pick * len(centres)), len(centres) - 1)]
        grid = np.ogrid[tuple(slice(0, n) for n in spec.shape)]
        inside = sum(
            ((g - c) * s / r) ** 2 for g, c, s, r in zip(grid, centre, spec.spacing, radii)
        ) < 1.0
        inside &= organ  # already true by construction; kept as a guarantee
        hu = _ANATOMY_HU[host] - darker + t_rng.normal(0.0, _TUMOUR_TEXTURE_HU, int(inside.sum()))
        noise = t_rng.normal(0.0, scanner.noise_sigma, hu.shape)
        image[inside] = (hu * scanner.hu_scale + scanner.hu_offset + noise).astype(np.float32)
        label[inside] = organ_label(tumour)
        hosts[tumour] = host
    return hosts


def _rotation_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _rotation_y(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _check_names(names: Sequence[str], vocabulary: Sequence[str], what: str) -> tuple[str, ...]:
    """Validate names against `vocabulary`; return them deduplicated in vocabulary order."""
    if isinstance(names, str):
        names = [names]
    for name in names:
        if name not in vocabulary:
            raise ConfigError(
                f"Unknown {what} '{name}'.{did_you_mean(name, vocabulary)} Known: {', '.join(vocabulary)}."
            )
    return tuple(v for v in vocabulary if v in names)


def _check_organs(organs: Sequence[str]) -> tuple[str, ...]:
    """Validate a site's organ (and tumour) names; a site labels at least one."""
    checked = _check_names(organs, STRUCTURES, "organ")
    if not checked:
        raise ConfigError("A phantom site must label at least one organ.")
    return checked


def _check_tumours(tumours: Sequence[str]) -> tuple[str, ...]:
    """Validate tumour names."""
    return _check_names(tumours, TUMOURS, "tumour")


def _check_seed(seed: int, site_index: int) -> None:
    if seed < 0 or site_index < 0:
        raise ConfigError(
            f"Phantom seed and site index must be >= 0, got seed={seed}, site_index={site_index}."
        )


def _check_cases(n_cases: int) -> None:
    if n_cases < 1:
        raise ConfigError(f"A phantom folder needs at least 1 case, got n_cases={n_cases}.")
