"""Segmentation pictures on hand-made volumes: size, organ colours in the pixels, slice choice, orientation,
and fedray report's method panel from run folders (an untrained model's checkpoint, no Ray)."""

from __future__ import annotations

import json

import matplotlib.colors as mcolors
import matplotlib.image as mimage
import numpy as np
import pandas as pd
import pytest

from fedray.organs import ORGANS, STRUCTURES
from fedray.reporting.overlay import (
    DPI,
    FIGURE_WIDTH_IN,
    LEGEND_IN,
    ORGAN_COLOURS,
    MethodOverlays,
    method_overlays,
    method_panel_png,
    overlay_png,
    pick_slices,
)

WIDTH_PX = round(FIGURE_WIDTH_IN * DPI)
LEGEND_PX = round(LEGEND_IN * DPI)
SPACING = (2.0, 2.0, 3.0)
AFFINE = np.diag([*SPACING, 1.0])


def phantom(shape=(48, 40, 24)):
    """A body of soft tissue in air; liver (1) on the patient's right, spleen (2) on the left."""
    x, y, _ = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    body = ((x - shape[0] / 2) / (shape[0] * 0.45)) ** 2 + ((y - shape[1] / 2) / (shape[1] * 0.45)) ** 2 < 1
    image = np.where(body, 40.0, -1000.0).astype(np.float32)
    reference = np.zeros(shape, dtype=np.uint8)
    reference[30:42, 12:28, 6:18] = 1  # high x: the patient's right (RAS)
    reference[8:16, 14:24, 8:16] = 2
    image[reference == 1] = 60.0
    image[reference == 2] = 50.0
    return image, reference


def colour_pixels(pixels: np.ndarray, organ: str, tolerance: float = 0.04) -> np.ndarray:
    """Mask of the pixels drawn in `organ`'s colour."""
    rgb = np.array(mcolors.to_rgb(ORGAN_COLOURS[organ]))
    return np.all(np.abs(pixels[..., :3] - rgb) < tolerance, axis=-1)


def panels(png) -> np.ndarray:
    """The picture without its legend strip (which shows every drawn organ's colour too)."""
    return mimage.imread(png)[:-LEGEND_PX]


def test_every_structure_has_its_own_colour():
    assert set(ORGAN_COLOURS) == set(STRUCTURES)
    assert len({mcolors.to_hex(c) for c in ORGAN_COLOURS.values()}) == len(STRUCTURES)


def test_overlay_is_readable_width_and_draws_each_organ_in_its_colour(tmp_path):
    image, reference = phantom()
    prediction = np.roll(reference, 2, axis=1)  # a little off, as a model would be
    png = overlay_png(image, prediction, tmp_path / "case.png", ORGANS, reference=reference, title="case",
                      affine=AFFINE)
    pixels = mimage.imread(png)
    assert pixels.shape[1] == WIDTH_PX and 300 < pixels.shape[0] < 1200
    drawn = panels(png)
    assert colour_pixels(drawn, "liver").sum() > 50 and colour_pixels(drawn, "spleen").sum() > 50
    assert not colour_pixels(pixels, "kidney_left").any()  # not in any label map: neither drawn nor listed


def test_radiological_orientation_whatever_the_files_axes(tmp_path):
    image, reference = phantom()
    ras = overlay_png(image, reference, tmp_path / "ras.png", ORGANS, reference=reference, affine=AFFINE)
    # The same volume stored left-posterior-superior (a common DICOM-derived layout).
    flip = lambda v: v[::-1, ::-1, :].copy()  # noqa: E731
    lps_affine = np.diag([-SPACING[0], -SPACING[1], SPACING[2], 1.0])
    lps = overlay_png(flip(image), flip(reference), tmp_path / "lps.png", ORGANS, reference=flip(reference),
                      affine=lps_affine)
    a, b = panels(ras), panels(lps)
    # Pictures match, except the slice labels (file indices), which differ; compare the liver's pixels.
    assert (colour_pixels(a, "liver") == colour_pixels(b, "liver")).mean() > 0.999
    # The liver, on the patient's right, is on the left of the axial panel (the figure's left half).
    columns = np.flatnonzero(colour_pixels(a, "liver")[:, : WIDTH_PX // 2].any(axis=0))
    spleen = np.flatnonzero(colour_pixels(a, "spleen")[:, : WIDTH_PX // 2].any(axis=0))
    assert columns.mean() < spleen.mean()


def test_without_a_reference_the_prediction_is_drawn(tmp_path):
    image, reference = phantom()
    png = overlay_png(image, reference, tmp_path / "pred.png", ORGANS)  # no affine: RAS, 1 mm
    drawn = panels(png)
    assert mimage.imread(png).shape[1] == WIDTH_PX
    assert colour_pixels(drawn, "liver").sum() > 50 and colour_pixels(drawn, "spleen").sum() > 50


def test_scaled_intensities_are_shown_too(tmp_path):
    image, reference = phantom()
    png = overlay_png(image / 1000.0, reference, tmp_path / "scaled.png", ORGANS, reference=reference)
    grey = panels(png)[..., :3]
    assert grey.std() > 0.05  # not a flat picture


def test_slices_go_through_the_reference_foreground(tmp_path):
    image, _ = phantom()
    reference = np.zeros(image.shape, dtype=np.uint8)
    reference[20:30, 30:34, 2:5] = 3  # kidney_left, only in a few slices far from the middle
    prediction = np.zeros_like(reference)
    prediction[5:15, 5:15, 12:20] = 1  # the prediction's foreground is elsewhere
    z, y = pick_slices(reference, prediction)
    assert 2 <= z < 5 and 30 <= y < 34
    assert pick_slices(None, prediction)[0] in range(12, 20)  # no reference: the prediction's
    assert pick_slices(np.zeros_like(reference)) == (image.shape[2] // 2, image.shape[1] // 2)
    png = overlay_png(image, prediction, tmp_path / "slab.png", ORGANS, reference=reference, affine=AFFINE)
    assert colour_pixels(panels(png), "kidney_left").sum() > 20


def test_slices_show_the_most_structures(tmp_path):
    labels = np.zeros((20, 20, 20), dtype=np.uint8)
    labels[2:18, 2:18, 2:10] = 1  # a big organ alone in z 2..9
    labels[5:8, 5:8, 12:14] = 1
    labels[10:13, 10:13, 12:14] = 2  # two organs in z 12..13
    assert pick_slices(labels)[0] in (12, 13)


def test_method_panel_has_a_row_per_method_on_the_same_slices(tmp_path):
    image, reference = phantom()
    predictions = {"fedavg": reference, "fedprox": np.roll(reference, 3, axis=0), "local": np.zeros_like(reference)}
    png = method_panel_png(image, reference, predictions, tmp_path / "panel.png", ORGANS, affine=AFFINE,
                           title="test_000")
    one = overlay_png(image, reference, tmp_path / "one.png", ORGANS, reference=reference, affine=AFFINE)
    pixels = mimage.imread(png)
    assert pixels.shape[1] == WIDTH_PX
    single_row = mimage.imread(one).shape[0] - LEGEND_PX
    assert pixels.shape[0] > 2.5 * single_row
    # The reference is drawn in every row, the empty prediction's row included: the liver in each third.
    rows = np.array_split(panels(png), 3)
    assert all(colour_pixels(row, "liver").sum() > 50 for row in rows)
    assert all(colour_pixels(row, "spleen").sum() > 20 for row in rows)


def test_report_panel_from_run_folders_and_notes_for_missing_ones(tmp_path):
    from fedray.config import config_from_data, save_config, with_absolute_paths
    from fedray.data.federation import held_out_folder, prepare_hospitals
    from fedray.models.factory import build_model
    from fedray.tracking.checkpoint import Checkpoint, checkpoint_path, save_checkpoint
    from tests.conftest import tiny_study

    config = with_absolute_paths(config_from_data(tiny_study(tmp_path)))
    prepared = prepare_hospitals(config)
    assert prepared.test_dir == held_out_folder(config)
    run_dir = config.run_dir
    save_config(config, run_dir / "config.resolved.yaml")
    (run_dir / "hospitals.json").write_text(json.dumps({"hospitals": [h.record() for h in prepared.hospitals]}))
    model = build_model(config.model, len(config.data.organs))  # untrained: any labels will do
    save_checkpoint(Checkpoint(1, {k: v.numpy() for k, v in model.state_dict().items()}), checkpoint_path(run_dir))

    runs = pd.DataFrame({
        "run_id": ["r1", "r2", "r3"],
        "variant": ["fedavg", "gone", "fedavg_s1"],
        "seed": [0, 0, 1],
        "dice/mean": [0.3, 0.5, 0.2],
        "run_dir": [str(run_dir), str(tmp_path / "elsewhere"), str(run_dir)],
    })
    result = method_overlays(runs, tmp_path / "report")
    assert result.png == tmp_path / "report" / "segmentations.png" and result.png.is_file()
    assert result.case == "test_000" and result.seed == 0
    assert any("gone" in note and "not on this machine" in note for note in result.notes)
    assert any("fedavg_s1" in note and "seed 1" in note for note in result.notes)
    assert mimage.imread(result.png).shape[1] == WIDTH_PX
    assert method_overlays(runs.iloc[[1]], tmp_path / "none").png is None


def test_report_markdown_shows_the_panel_and_its_notes(tmp_path):
    from fedray.reporting.report import write_report

    runs = pd.DataFrame({
        "run_id": ["a0", "a1", "b0", "b1"], "variant": ["a", "a", "b", "b"], "seed": [0, 1, 0, 1],
        "dice/mean": [0.5, 0.6, 0.4, 0.45], "dice/liver": [0.5, 0.6, 0.4, 0.45],
        "comm/bytes_total": [1e6] * 4, "comm/bytes_preparation": [0.0] * 4, "params_total": [1000] * 4,
        "infer/s_per_volume": [0.1] * 4,
    })
    histories = pd.DataFrame([
        {"run_id": r, "metric": m, "step": s, "value": v}
        for r in runs["run_id"] for s in (1, 2)
        for m, v in (("dice/mean", 0.2 * s), ("comm/bytes_down", 1e5 * s), ("comm/bytes_total", 5e5 * s))
    ])
    image, reference = phantom()
    out = tmp_path / "report"
    png = method_panel_png(image, reference, {"a": reference}, out / "segmentations.png", ORGANS)
    overlays = MethodOverlays(png, "test_000", 0, ("b: run b0's folder is not on this machine; not drawn",))
    report = write_report(runs, histories, "exp", out, "a", overlays=overlays)
    text = report.markdown.read_text()
    assert "## Segmentations" in text and "![segmentations](segmentations.png)" in text
    assert "- b: run b0's folder is not on this machine" in text
    assert report.segmentations == png
    plain = write_report(runs, histories, "exp", tmp_path / "plain", "a")
    assert "Segmentations" not in plain.markdown.read_text() and plain.segmentations is None


@pytest.mark.parametrize("bad", [np.zeros((4, 4)), np.zeros((4, 4, 4, 2))])
def test_a_non_volume_is_refused(tmp_path, bad):
    with pytest.raises(ValueError):
        overlay_png(bad, None, tmp_path / "x.png", ORGANS)


def test_predict_overlay_is_named_after_its_input(tmp_path):
    from types import SimpleNamespace

    import nibabel as nib

    from fedray.reporting.overlay import prediction_overlay

    image, reference = phantom()
    nib.save(nib.Nifti1Image(image, AFFINE), tmp_path / "ct_007.nii.gz")
    nib.save(nib.Nifti1Image(reference, AFFINE), tmp_path / "labels.nii.gz")
    config = SimpleNamespace(run_name="quickstart", method=SimpleNamespace(name="fedavg"))
    trained = SimpleNamespace(config=config, round=3, organs=ORGANS)
    png = prediction_overlay(tmp_path / "ct_007.nii.gz", tmp_path / "labels.nii.gz", trained, tmp_path / "out")
    assert png == tmp_path / "out" / "ct_007.png"
    assert colour_pixels(panels(png), "liver").sum() > 50
