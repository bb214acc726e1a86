"""Dice from summed TP/FP/FN counts and HD95 in mm, NaN for absent organs."""

from __future__ import annotations

import math

import numpy as np
import torch

from fedray.metrics.segmentation import confusion_counts, dice_from_counts, hd95_mm, mean_dice


def test_counts_by_hand():
    truth = torch.tensor([[0, 1, 1, 2]])
    pred = torch.tensor([[1, 1, 0, 0]])
    counts = confusion_counts(pred, truth, n_organs=3)
    # organ 1: TP at idx1, FP at idx0, FN at idx2; organ 2: FN at idx3; organ 3 absent
    assert counts.tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 0]]
    dice = dice_from_counts(counts)
    assert dice[0] == 0.5 and dice[1] == 0.0 and math.isnan(dice[2])
    assert mean_dice(dice) == 0.25  # NaN organ ignored, not counted as 0 or 1


def test_summed_counts_differ_from_mean_of_per_case_dice():
    # Case A: tiny organ missed badly; case B: large organ found. Summing counts weights by voxels.
    a = np.array([[0, 0, 2]])  # Dice 0
    b = np.array([[90, 10, 0]])  # Dice 180/190
    pooled = dice_from_counts(a + b)[0]
    averaged = (dice_from_counts(a)[0] + dice_from_counts(b)[0]) / 2
    assert pooled == 180 / 192
    assert abs(pooled - averaged) > 0.4


def test_all_absent_gives_nan_mean():
    assert math.isnan(mean_dice(np.array([np.nan, np.nan])))


def test_hd95_of_a_shifted_slab_by_hand():
    # A 4x4x2 slab (every voxel on its surface) and the same slab 4 voxels further along z: half of
    # each one's surface voxels are 3 z-steps from the other's, half 4, so the 95th percentile is
    # 4 steps = 4 * 2.5 mm. Anisotropic voxels: only the z size matters here.
    truth = torch.zeros(12, 12, 14, dtype=torch.long)
    prediction = truth.clone()
    truth[2:6, 2:6, 2:4] = 1
    prediction[2:6, 2:6, 6:8] = 1
    prediction[8:10, 8:10, 8:10] = 3  # organ 3 only predicted
    distances = hd95_mm(prediction, truth, n_organs=3, spacing=(2.0, 1.0, 2.5))
    assert distances[0] == 10.0
    assert np.isnan(distances[1]) and np.isnan(distances[2])  # absent from both; from the truth
    assert hd95_mm(truth, truth, 1, (2.0, 1.0, 2.5)).tolist() == [0.0]


def _two_label_maps():
    # Organs 1-2 overlap partly, organ 3 is only in the truth, organ 4 only predicted, organ 5 absent.
    truth = torch.zeros(16, 14, 12, dtype=torch.long)
    truth[2:9, 3:10, 2:8] = 1
    truth[10:14, 2:6, 5:11] = 2
    truth[3:6, 11:13, 9:11] = 3
    prediction = torch.roll(truth, (1, -1, 2), dims=(0, 1, 2))
    prediction[prediction == 3] = 0
    prediction[12:15, 10:13, 1:3] = 4
    return prediction, truth


def test_counts_match_monais_confusion_matrix():
    # What the comment in confusion_counts relies on: the same TP/FP/FN as MONAI's (one-hot) function.
    from monai.metrics import get_confusion_matrix
    from monai.networks.utils import one_hot

    prediction, truth = _two_label_maps()
    matrix = get_confusion_matrix(
        one_hot(prediction[None, None], 6, dtype=torch.uint8), one_hot(truth[None, None], 6, dtype=torch.uint8),
        include_background=False,
    )[0]  # (organ, [TP, FP, TN, FN])
    assert confusion_counts(prediction, truth, 5).tolist() == matrix[:, [0, 1, 3]].long().tolist()


def test_hd95_matches_monais_metric_with_nan_for_absent_organs():
    # hd95_mm equals HausdorffDistanceMetric(percentile=95) on one-hot maps, whose non-finite values
    # (organ on one side only: inf, or NaN from the quantile of infs; on neither: NaN) are NaN here.
    import warnings

    from monai.metrics import HausdorffDistanceMetric
    from monai.networks.utils import one_hot

    prediction, truth = _two_label_maps()
    spacing = (2.0, 1.0, 2.5)
    metric = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI warns about the empty organs
        theirs = metric(y_pred=one_hot(prediction[None, None], 6), y=one_hot(truth[None, None], 6), spacing=list(spacing))
    theirs = theirs[0].double().numpy()
    assert not np.isfinite(theirs[2:]).any()
    ours = hd95_mm(prediction, truth, 5, spacing)
    assert np.array_equal(ours, np.where(np.isfinite(theirs), theirs, np.nan), equal_nan=True)
    assert np.isfinite(ours[:2]).all() and ours[0] > 0


def test_surface_dice_by_rule():
    import math

    from fedray.metrics.segmentation import surface_dice

    truth = torch.zeros(20, 20, 20, dtype=torch.long)
    truth[5:15, 5:15, 5:15] = 1
    shifted = torch.zeros_like(truth)
    shifted[6:16, 5:15, 5:15] = 1  # one voxel (2 mm) along x
    spacing = (2.0, 1.0, 1.0)
    scores = surface_dice(truth, truth, 3, spacing, 1.0)
    assert scores[0] == 1.0 and math.isnan(scores[1]) and math.isnan(scores[2])  # organs 2, 3 absent from both
    assert surface_dice(shifted, truth, 1, spacing, 2.5)[0] == 1.0  # every surface voxel within 2.5 mm
    assert 0 < surface_dice(shifted, truth, 1, spacing, 1.5)[0] < 1  # the two x-faces are 2 mm off
    assert surface_dice(torch.zeros_like(truth), truth, 1, spacing, 2.0)[0] == 0.0  # missed entirely


def _full_grid_monai(prediction, truth, n_organs, spacing, tolerance_mm):
    """MONAI's own HD95 and surface Dice of each organ on the whole grid (what regions must equal)."""
    import warnings

    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    hd95, nsd = np.full(n_organs, np.nan), np.full(n_organs, np.nan)
    for k in range(n_organs):
        pred, true = prediction == k + 1, truth == k + 1
        if not (pred.any() and true.any()):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hd95[k] = float(compute_hausdorff_distance(pred[None, None], true[None, None], include_background=True,
                                                       percentile=95, spacing=list(spacing)))
            one_hot = [torch.stack([~m, m])[None] for m in (pred, true)]
            nsd[k] = float(compute_surface_dice(one_hot[0], one_hot[1], class_thresholds=[tolerance_mm],
                                                spacing=list(spacing)))
    return hd95, nsd


def _edge_cases():
    # Organ 1 touches the grid's first and last x faces; organ 2 is predicted far from its reference
    # (disjoint boxes: a crop to the reference's box would drop the prediction); organ 3 is a thin
    # plate touching the grid's z edge, off by one voxel along the coarse axis.
    truth = torch.zeros(24, 20, 16, dtype=torch.long)
    truth[0:24, 2:7, 3:9] = 1
    truth[3:7, 12:16, 2:6] = 2
    truth[14:20, 10:18, 15:16] = 3
    prediction = torch.zeros_like(truth)
    prediction[0:22, 3:7, 3:10] = 1
    prediction[17:21, 2:5, 10:14] = 2
    prediction[14:20, 11:18, 14:15] = 3
    return prediction, truth


def test_surface_scores_on_regions_equal_the_whole_grid():
    from fedray.metrics.segmentation import surface_scores

    prediction, truth = _edge_cases()
    spacing = (0.7, 2.0, 3.5)  # anisotropic: a crop that rescaled or reordered axes would differ
    hd95, nsd = surface_scores(prediction, truth, 3, spacing, 2.0)
    full_hd95, full_nsd = _full_grid_monai(prediction, truth, 3, spacing, 2.0)
    assert np.isfinite(hd95).all() and np.array_equal(hd95, full_hd95)
    assert np.array_equal(nsd, full_nsd)


def test_a_naive_crop_would_differ_on_these_volumes():
    # What the test above guards against: cropped to the reference's box alone, organ 2's prediction
    # is lost and organ 1's surface on the cut faces changes.
    prediction, truth = _edge_cases()
    spacing = (0.7, 2.0, 3.5)
    full_hd95, _ = _full_grid_monai(prediction, truth, 3, spacing, 2.0)
    box = (slice(1, 23), slice(2, 7), slice(3, 9))  # inside organ 1's reference box, no margin
    cropped, _ = _full_grid_monai(prediction[box], truth[box], 3, spacing, 2.0)
    assert not np.allclose(cropped[:1], full_hd95[:1]) and np.isnan(cropped[1]) and np.isfinite(full_hd95[1])


def test_organ_regions_are_the_union_of_both_boxes_plus_the_margin():
    from fedray.metrics.segmentation import SURFACE_MARGIN, organ_regions

    prediction, truth = _edge_cases()
    regions = organ_regions(prediction, truth, 4)
    m = SURFACE_MARGIN
    assert regions[0] == ((slice(0, 24), slice(2 - m, 7 + m), slice(3 - m, 10 + m)), True, True)  # clipped at x
    assert regions[1] == ((slice(3 - m, 21 + m), slice(2 - m, 16 + m), slice(2 - m, 14 + m)), True, True)
    assert regions[3] is None


def test_counts_ignore_labels_outside_the_study():
    truth = torch.tensor([[0, 1, 7, 2]])
    pred = torch.tensor([[9, 1, 1, -1]])
    assert confusion_counts(pred, truth, 2).tolist() == [[1, 1, 0], [0, 0, 1]]


def test_a_missed_organ_scores_the_penalty_and_counts_as_missed():
    from fedray.metrics.segmentation import image_diagonal_mm, penalised_hd95

    distances = np.array([4.0, np.nan, np.nan, np.nan])
    counts = np.array([[5, 1, 1], [0, 0, 3], [0, 2, 0], [0, 0, 0]])  # found; missed; only predicted; absent
    scored, missed = penalised_hd95(distances, counts, 99.0)
    assert scored[:2].tolist() == [4.0, 99.0] and np.isnan(scored[2:]).all()
    assert missed.tolist() == [False, True, False, False]
    assert image_diagonal_mm((3, 4, 12), (1.0, 1.0, 1.0)) == 13.0
