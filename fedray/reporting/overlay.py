"""Pictures of segmentations: axial and coronal CT slices with reference and predicted organ outlines.

Every structure has one colour (`ORGAN_COLOURS`) in every picture fedray draws. The reference is a
solid line, the prediction a translucent fill with a thin edge, so where they agree the line runs
along the fill's edge, a missed part is line without fill, a false positive fill without line.
Slices go through the most reference foreground (else prediction foreground) and are shown in
radiological orientation: axial seen from the feet (patient's right on the left, anterior up),
coronal from the front (right on the left, head up), at the voxels' true aspect.

`overlay_png` draws one volume; `method_panel_png` one row per method on the same slices;
`prediction_overlay` is `fedray predict --overlay`'s picture of a written label map; `method_overlays`
is `fedray report`'s panel of every method on the first test volume.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # headless: pictures are drawn on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from fedray.organs import STRUCTURES  # noqa: E402

if TYPE_CHECKING:
    import pandas as pd

    from fedray.inference.predict import TrainedStudy

# One colour per structure, bright enough on grey CT. The organs use the Okabe-Ito palette (told apart
# with the common colour-vision deficiencies; neighbours such as kidney/spleen or liver/stomach get
# far-apart hues); each tumour contrasts with its host organ, which surrounds it.
ORGAN_COLOURS: dict[str, str] = {
    "liver": "#D55E00",  # vermillion
    "spleen": "#CC79A7",  # reddish purple
    "kidney_left": "#0072B2",  # blue
    "kidney_right": "#56B4E9",  # sky blue
    "pancreas": "#F0E442",  # yellow
    "stomach": "#009E73",  # bluish green
    "gallbladder": "#E69F00",  # orange
    "liver_tumour": "#FFFFFF",  # white, inside vermillion liver
    "kidney_tumour": "#EE3377",  # magenta, inside blue kidneys
    "pancreas_tumour": "#7FFFD4",  # aquamarine, inside yellow pancreas
}
assert set(ORGAN_COLOURS) == set(STRUCTURES)

ABDOMEN_WINDOW = (-160.0, 240.0)  # HU: soft-tissue window, level 40, width 400
FIGURE_WIDTH_IN = 11.5  # 1150 px at DPI: sharp at GitHub's README width (about 900 px) and zoomable
DPI = 100
LEGEND_IN = 0.75  # the legend strip at the bottom of every figure
_TITLE_IN = 0.42  # a row's title strip
_MARGIN_IN = 0.12
_GAP_IN = 0.15
_MAX_PANEL_HEIGHT_IN = 6.5  # a very long coronal field of view is shrunk (its width with it)


def organ_colour(organ: str) -> str:
    """The structure's colour (a matplotlib hex string)."""
    return ORGAN_COLOURS[organ]


def pick_slices(*label_maps: np.ndarray | None) -> tuple[int, int]:
    """(axial z, coronal y) of (X, Y, Z) label maps: the slices through the most structures of the first
    map with any foreground (the reference, then the prediction), and of those the one with the most
    foreground; the volume's middle when no map has foreground."""
    given = [np.asarray(m) for m in label_maps if m is not None]
    if not given:
        raise ValueError("pick_slices needs at least one label map")
    for labels in given:
        if labels.any():
            return _best_slice(labels, 2), _best_slice(labels, 1)
    return given[0].shape[2] // 2, given[0].shape[1] // 2


def _best_slice(labels: np.ndarray, axis: int) -> int:
    """The slice along `axis` showing the most structures, the most foreground among those."""
    others = tuple(a for a in range(3) if a != axis)
    structures = np.zeros(labels.shape[axis], dtype=np.int64)
    for value in np.flatnonzero(np.bincount(labels.ravel()))[1:]:  # the values present, background aside
        structures += (labels == value).any(axis=others)
    foreground = np.count_nonzero(labels, axis=others)
    return int(np.lexsort((-foreground, -structures))[0])  # first key last: structures, then foreground


def overlay_png(
    image: np.ndarray,
    prediction: np.ndarray | None,
    out_png: str | Path,
    organs: Sequence[str],
    reference: np.ndarray | None = None,
    title: str = "",
    affine: np.ndarray | None = None,
) -> Path:
    """One row, axial and coronal, of `image` with `prediction` (and `reference`) drawn on it.

    Args:
        image: (X, Y, Z) CT in HU (a soft-tissue window) or already scaled (shown from its 1st to
            99th percentile).
        prediction: (X, Y, Z) label map in study numbering (organ k of `organs` is k + 1), or None.
        organs: the study's structures (config.data.organs) in their numbering order.
        reference: (X, Y, Z) reference label map in the same numbering, or None.
        affine: the voxel-to-world affine of all three (NIfTI); gives orientation and spacing.
            Without it the arrays are taken as RAS with 1 mm voxels.
    """
    rows = [(title, prediction)]
    return _draw(image, reference, rows, Path(out_png), organs, affine)


def method_panel_png(
    image: np.ndarray,
    reference: np.ndarray | None,
    predictions: Mapping[str, np.ndarray],
    out_png: str | Path,
    organs: Sequence[str],
    affine: np.ndarray | None = None,
    title: str = "",
) -> Path:
    """One row per method (axial and coronal of the same slices for all), the reference drawn in every
    row; each row's title gives the method's mean Dice on this volume when there is a reference.

    `predictions`: method label -> (X, Y, Z) label map in study numbering, drawn in this order.
    """
    if not predictions:
        raise ValueError("method_panel_png needs at least one prediction")
    rows = []
    for method, labels in predictions.items():
        dice = volume_dice(reference, labels, len(organs)) if reference is not None else math.nan
        rows.append((method if math.isnan(dice) else f"{method}: mean Dice {100 * dice:.1f}% on this volume", labels))
    return _draw(image, reference, rows, Path(out_png), organs, affine, title)


def volume_dice(reference: np.ndarray, prediction: np.ndarray, n_organs: int) -> float:
    """Mean over the structures in `reference` of their Dice on this one volume (NaN if none is there)."""
    scores = []
    for value in range(1, n_organs + 1):
        ref, pred = reference == value, prediction == value
        if ref.any():
            scores.append(2 * np.count_nonzero(ref & pred) / (np.count_nonzero(ref) + np.count_nonzero(pred)))
    return float(np.mean(scores)) if scores else math.nan


# ---------------------------------------------------------------------------------------------------
# Drawing


@dataclass(frozen=True)
class _Views:
    """The volumes reoriented to RAS, their voxel spacing and the chosen slices."""

    image: np.ndarray
    reference: np.ndarray | None
    rows: list[tuple[str, np.ndarray | None]]
    spacing: tuple[float, float, float]
    z: int
    y: int
    z_label: str  # where the slices are in the file: "file axis 2 = 31"
    y_label: str


def _to_ras(volume: np.ndarray, affine: np.ndarray | None) -> np.ndarray:
    if affine is None:
        return np.asarray(volume)
    import nibabel.orientations as orientations

    transform = orientations.ornt_transform(orientations.io_orientation(affine), orientations.axcodes2ornt("RAS"))
    return orientations.apply_orientation(np.asarray(volume), transform)


def _ras_spacing(affine: np.ndarray | None) -> tuple[float, float, float]:
    if affine is None:
        return (1.0, 1.0, 1.0)
    import nibabel.orientations as orientations

    zooms = np.sqrt((np.asarray(affine, dtype=float)[:3, :3] ** 2).sum(axis=0))
    order = orientations.io_orientation(affine)[:, 0].astype(int)  # file axis i lies along world axis order[i]
    spacing = [1.0, 1.0, 1.0]
    for axis, world in enumerate(order):
        spacing[world] = float(zooms[axis])
    return tuple(spacing)


def _views(image, reference, rows, affine) -> _Views:
    image = np.asarray(image)
    if image.ndim == 4 and image.shape[3] == 1:
        image = image[..., 0]
    if image.ndim != 3:
        raise ValueError(f"an (X, Y, Z) image is needed, got shape {image.shape}")
    for _, labels in [("reference", reference), *rows]:
        if labels is not None and np.shape(labels)[:3] != image.shape:
            raise ValueError(f"label map of shape {np.shape(labels)} is not on the image's grid {image.shape}")
    ras = lambda v: None if v is None else _to_ras(np.asarray(v).reshape(image.shape), affine)  # noqa: E731
    reference = ras(reference)
    rows = [(name, ras(labels)) for name, labels in rows]
    shape = image.shape
    image = _to_ras(image, affine).astype(np.float32)
    box = _body_box(image, [reference, *[labels for _, labels in rows]])
    crop = lambda v: None if v is None else v[box]  # noqa: E731
    image, reference, rows = image[box], crop(reference), [(name, crop(labels)) for name, labels in rows]
    maps = [m for m in (reference, *[labels for _, labels in rows]) if m is not None]
    z, y = pick_slices(*maps) if maps else (image.shape[2] // 2, image.shape[1] // 2)
    where = lambda world, index: _file_slice(affine, shape, world, index + box[world].start)  # noqa: E731
    return _Views(image, reference, rows, _ras_spacing(affine), z, y, where(2, z), where(1, y))


def _file_slice(affine: np.ndarray | None, shape: tuple[int, ...], world: int, ras_index: int) -> str:
    """'k=31': the file's voxel index (i, j or k) of a slice found at `ras_index` along RAS axis `world`."""
    if affine is None:
        return f"{'ijk'[world]}={ras_index}"
    import nibabel.orientations as orientations

    ornt = orientations.io_orientation(affine)
    axis = int(np.flatnonzero(ornt[:, 0] == world)[0])
    index = ras_index if ornt[axis, 1] > 0 else shape[axis] - 1 - ras_index
    return f"{'ijk'[axis]}={index}"


def _body_box(image: np.ndarray, label_maps: list[np.ndarray | None], margin: int = 3) -> tuple[slice, ...]:
    """The box around the body (not air) and every label, plus `margin` voxels: what the pictures show."""
    low, high = float(image.min()), float(image.max())
    inside = image > (-500.0 if high - low > 50 else low + 0.1 * (high - low))
    for labels in label_maps:
        if labels is not None:
            inside |= labels > 0
    if not inside.any():
        return (slice(None),) * 3
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hit = np.flatnonzero(inside.any(axis=other))
        box.append(slice(max(0, int(hit[0]) - margin), min(image.shape[axis], int(hit[-1]) + 1 + margin)))
    return tuple(box)


def _axial(volume: np.ndarray, z: int) -> np.ndarray:
    """Seen from the feet: rows anterior to posterior, columns patient right to left."""
    return volume[::-1, ::-1, z].T


def _coronal(volume: np.ndarray, y: int) -> np.ndarray:
    """Seen from the front: rows superior to inferior, columns patient right to left."""
    return volume[::-1, y, ::-1].T


def _window(image: np.ndarray) -> tuple[float, float]:
    low, high = float(np.min(image)), float(np.max(image))
    if high - low > 50:  # Hounsfield units
        return ABDOMEN_WINDOW
    low, high = (float(v) for v in np.percentile(image, [1, 99]))  # scaled intensities
    return (low, high) if high > low else (low, low + 1)


def _draw(image, reference, rows, out_png: Path, organs, affine, title: str = "") -> Path:
    views = _views(image, reference, rows, affine)
    sx, sy, sz = views.spacing
    nx, ny, nz = views.image.shape
    # Both panels span the patient's width (X) at one scale; axial is Y deep, coronal Z tall (in mm).
    width_mm, heights_mm = nx * sx, (ny * sy, nz * sz)
    panel_w = (FIGURE_WIDTH_IN - 2 * _MARGIN_IN - _GAP_IN) / 2
    panel_h = panel_w * max(heights_mm) / width_mm
    if panel_h > _MAX_PANEL_HEIGHT_IN:
        panel_w, panel_h = panel_w * _MAX_PANEL_HEIGHT_IN / panel_h, _MAX_PANEL_HEIGHT_IN
    head = _TITLE_IN if title else 0.0
    row_h = _TITLE_IN + panel_h + _GAP_IN
    height = head + len(views.rows) * row_h + LEGEND_IN
    fig = plt.figure(figsize=(FIGURE_WIDTH_IN, height), dpi=DPI)
    if title:
        fig.text(0.5, 1 - head / 2 / height, title, ha="center", va="center", fontsize=14, weight="bold")
    low, high = _window(views.image)
    left0 = (FIGURE_WIDTH_IN - 2 * panel_w - _GAP_IN) / 2
    shown: set[int] = set()
    for r, (name, labels) in enumerate(views.rows):
        top = height - head - r * row_h  # inches from the bottom
        if name:
            fig.text(left0 / FIGURE_WIDTH_IN, (top - _TITLE_IN / 2) / height, name, ha="left", va="center",
                     fontsize=12, weight="bold")
        for c, (cut, index, view, axis) in enumerate(
            [(_axial, views.z, "axial", views.z_label), (_coronal, views.y, "coronal", views.y_label)]
        ):
            rect = (
                (left0 + c * (panel_w + _GAP_IN)) / FIGURE_WIDTH_IN,
                (top - _TITLE_IN - panel_h) / height,
                panel_w / FIGURE_WIDTH_IN,
                panel_h / height,
            )
            ax = fig.add_axes(rect)
            ax.set_anchor("N")
            aspect = (sy if view == "axial" else sz) / sx
            ax.imshow(cut(views.image, index), cmap="gray", vmin=low, vmax=high, aspect=aspect,
                      interpolation="bilinear")
            ref_slice = None if views.reference is None else cut(views.reference, index)
            pred_slice = None if labels is None else cut(labels, index)
            shown |= _outline(ax, ref_slice, pred_slice, organs)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.text(0.01, 0.99, f"{view}, {axis}", transform=ax.transAxes, ha="left", va="top",
                    color="white", fontsize=9)
            ax.text(0.01, 0.5, "R", transform=ax.transAxes, ha="left", va="center", color="white", fontsize=10)
            ax.text(0.99, 0.5, "L", transform=ax.transAxes, ha="right", va="center", color="white", fontsize=10)
    _legend(fig, organs, shown, views.reference is not None, any(labels is not None for _, labels in views.rows),
            height)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=DPI)
    plt.close(fig)
    return out_png


def _outline(ax, reference: np.ndarray | None, prediction: np.ndarray | None, organs: Sequence[str]) -> set[int]:
    """Prediction as a translucent fill with a dashed edge, reference as a solid line; returns the values drawn."""
    drawn = set()
    for value, organ in enumerate(organs, start=1):
        colour = ORGAN_COLOURS[organ]
        if prediction is not None and (prediction == value).any():
            mask = (prediction == value).astype(np.float32)
            ax.contourf(mask, levels=[0.5, 1.5], colors=[colour], alpha=0.35, antialiased=True)
            # Beside a reference line a thin dashed edge; alone, a solid one.
            edge = {"linewidths": 0.9, "linestyles": "dashed"} if reference is not None else {"linewidths": 1.6}
            ax.contour(mask, levels=[0.5], colors=[colour], **edge)
            drawn.add(value)
    for value, organ in enumerate(organs, start=1):
        colour = ORGAN_COLOURS[organ]
        if reference is not None and (reference == value).any():
            ax.contour((reference == value).astype(np.float32), levels=[0.5], colors=[colour], linewidths=2.2)
            drawn.add(value)
    return drawn


def _legend(fig, organs, shown: set[int], with_reference: bool, with_prediction: bool, height: float) -> None:
    handles = [Patch(facecolor=ORGAN_COLOURS[organs[v - 1]], edgecolor="#555555", linewidth=0.6,  # white shows
                     label=organs[v - 1].replace("_", " ")) for v in sorted(shown)]
    if with_reference:
        handles.append(Line2D([], [], color="black", lw=2.2, label="reference (line)"))
    if with_prediction:
        handles.append(Patch(facecolor="#888888", alpha=0.5, edgecolor="black", linestyle="dashed",
                             label="prediction (fill)"))
    if not handles:
        return
    fig.legend(handles=handles, loc="center", bbox_to_anchor=(0.5, LEGEND_IN / 2 / height),
               ncol=len(handles) if len(handles) <= 9 else math.ceil(len(handles) / 2), frameon=False,
               fontsize=10.5, handlelength=1.5, handletextpad=0.5, columnspacing=1.2)


# ---------------------------------------------------------------------------------------------------
# fedray predict --overlay and fedray report


def prediction_overlay(image_path: str | Path, labels_path: str | Path, trained: TrainedStudy,
                       out_dir: str | Path) -> Path:
    """`fedray predict --overlay`: <out_dir>/<input name>.png of a written label map on its CT."""
    import nibabel as nib

    image_path, labels_path = Path(image_path), Path(labels_path)
    image = nib.load(image_path)
    labels = np.asanyarray(nib.load(labels_path).dataobj)
    name = _stem(image_path)
    title = f"{name}: {trained.config.run_name} ({trained.config.method.name}, round {trained.round})"
    return overlay_png(np.asanyarray(image.dataobj), labels, Path(out_dir) / f"{name}.png", trained.organs,
                       title=title, affine=image.affine)


@dataclass(frozen=True)
class MethodOverlays:
    """`method_overlays`' picture (None if none could be drawn) and what was left out, and why."""

    png: Path | None
    case: str | None = None  # the test case drawn
    seed: int | None = None  # the seed whose models are drawn
    notes: tuple[str, ...] = ()


def method_overlays(
    runs: pd.DataFrame,
    out_dir: str | Path,
    max_methods: int = 8,
    *,
    tracking_uri: str | None = None,
    device: str = "cpu",
    file_name: str = "segmentations.png",
) -> MethodOverlays:
    """Segment the first test volume with one model per variant (all of one seed) into one panel PNG.

    `runs`: `tidy_runs`' table (run_id, variant, seed, metrics). A run's folder comes from a `run_dir`
    column when there is one, else from its MLflow params (`tracking_uri`). Variants are drawn in
    order of mean Dice (best first), at most `max_methods`; the seed is the one most variants ran
    (the smallest on a tie), a variant without it uses its smallest seed. Runs whose folder or
    checkpoint is missing here are left out with a note, never an error.
    """
    from fedray.errors import FedrayError

    out_dir = Path(out_dir)
    notes: list[str] = []
    if runs.empty:
        return MethodOverlays(None, notes=("no runs to draw",))
    seed = _common_seed(runs)
    variants = _variants_by_dice(runs)
    if len(variants) > max_methods:
        notes.append(f"{len(variants) - max_methods} more variant(s) not drawn (max {max_methods}): "
                     + ", ".join(variants[max_methods:]))
        variants = variants[:max_methods]
    case = None
    predictions: dict[str, np.ndarray] = {}
    for variant in variants:
        of_variant = runs[runs["variant"] == variant].sort_values("seed")
        row = of_variant[of_variant["seed"] == seed]
        row = (row if not row.empty else of_variant).iloc[0]
        if int(row["seed"]) != seed:
            notes.append(f"{variant}: no seed {seed}, seed {int(row['seed'])} drawn")
        folder = _run_dir(row, tracking_uri)
        if folder is None:
            notes.append(f"{variant}: run {row['run_id']}'s folder is not on this machine; not drawn")
            continue
        try:
            labels, case = _segment_run(folder, case, device)
        except (FedrayError, OSError, RuntimeError, ValueError) as error:
            notes.append(f"{variant}: not drawn ({type(error).__name__}: {error})")
            continue
        predictions[variant] = labels
    if not predictions:
        return MethodOverlays(None, seed=seed, notes=tuple(notes))
    png = method_panel_png(case.image, case.reference, predictions, out_dir / file_name, case.organs,
                           affine=case.affine, title=f"Test case {case.name}, seed {seed}")
    return MethodOverlays(png, case.name, seed, tuple(notes))


@dataclass(frozen=True)
class _TestCase:
    name: str
    path: Path
    image: np.ndarray
    affine: np.ndarray
    reference: np.ndarray | None
    organs: tuple[str, ...]


def first_test_case(config) -> tuple[Path, Path, np.ndarray]:
    """(image, label, site table) of the study's first test case, read from its listing only.

    The site table maps the label file's values to study numbering (`site_table`). Raises DataError
    when the test folder is not there (a phantom study's cache removed) or cannot be listed.
    """
    from fedray.config import SiteConfig
    from fedray.data.sites import site_table
    from fedray.data.federation import held_out_folder
    from fedray.data.sites import read_site_cases
    from fedray.errors import DataError

    folder = held_out_folder(config)
    if not (folder / "dataset.json").is_file():
        raise DataError(f"the study's test folder {folder} is not on this machine")
    first = read_site_cases(SiteConfig(path=str(folder), name="test")).cases[0]
    return first.image, first.label, site_table(first.label_map, list(config.data.organs))


def _segment_run(folder: Path, case: _TestCase | None, device: str) -> tuple[np.ndarray, _TestCase]:
    """The run's prediction of `case` (the run's first test case when None) in the case's numbering."""
    import nibabel as nib

    from fedray.inference.predict import load_trained, segment

    trained = load_trained(folder, device=device)
    if case is None:
        image_path, label_path, table = first_test_case(trained.config)
        image = nib.load(image_path)
        raw = np.asanyarray(nib.load(label_path).dataobj).astype(np.int64)
        case = _TestCase(_stem(image_path), image_path, np.asanyarray(image.dataobj), image.affine,
                         table[raw].astype(np.uint8), trained.organs)
    labels = segment(trained, case.path)
    return _renumber(labels, trained.organs, case.organs), case


def _renumber(labels: np.ndarray, organs: Sequence[str], target: Sequence[str]) -> np.ndarray:
    """`labels` (numbered by `organs`) in `target`'s numbering; organs `target` lacks become background."""
    if tuple(organs) == tuple(target):
        return labels
    table = np.zeros(len(organs) + 1, dtype=np.uint8)
    for k, organ in enumerate(organs):
        table[k + 1] = target.index(organ) + 1 if organ in target else 0
    return table[labels]


def _run_dir(row, tracking_uri: str | None) -> Path | None:
    if "run_dir" in row.index and isinstance(row["run_dir"], str | Path):
        folder = Path(row["run_dir"])
        return folder if (folder / "config.resolved.yaml").is_file() else None
    from fedray.tracking.query import run_folder

    return run_folder(tracking_uri, str(row["run_id"]))


def _common_seed(runs: pd.DataFrame) -> int:
    counts = runs.groupby("seed")["variant"].nunique()
    return int(counts[counts == counts.max()].index.min())


def _variants_by_dice(runs: pd.DataFrame) -> list[str]:
    if "dice/mean" in runs.columns:
        means = runs.groupby("variant")["dice/mean"].mean().sort_values(ascending=False, kind="stable")
        return [str(v) for v in means.index]
    return sorted(str(v) for v in runs["variant"].unique())


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem
