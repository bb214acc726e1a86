"""Evaluation in the original image space: a perfect model scores Dice 1 and HD95 0 whatever the preprocessing."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from fedray.config import EvalConfig, PreprocessConfig
from fedray.data.datasets import load_folder
from fedray.messages import hd95_metric
from fedray.metrics.segmentation import dice_from_counts
from fedray.training.evaluate import Evaluation, evaluate

ORGANS = ["liver", "spleen", "pancreas"]  # pancreas is in no volume: its scores are NaN
EVAL = EvalConfig(roi_size=(16, 16, 16), overlap=0.25, sw_batch_size=2, mode="constant")


class ReadsLabelsFromIntensity(nn.Module):
    """A perfect model for images whose organ k is at k * 100 HU: one-hot logits of round(HU / 100)."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        hu = image * 325.0  # undo the default HU window scaling
        labels = (hu / 100.0).round().clamp(0, len(ORGANS)).long()[:, 0]
        return 10.0 * nn.functional.one_hot(labels, len(ORGANS) + 1).permute(0, 4, 1, 2, 3).float()


def write_case(folder, name, image, label, affine):
    nib.save(nib.Nifti1Image(image.astype(np.int16), affine), folder / "imagesTr" / f"{name}.nii.gz")
    nib.save(nib.Nifti1Image(label.astype(np.uint8), affine), folder / "labelsTr" / f"{name}.nii.gz")
    return {"image": f"./imagesTr/{name}.nii.gz", "label": f"./labelsTr/{name}.nii.gz"}


@pytest.fixture
def non_ras_folder(tmp_path):
    """Two anisotropic, non-RAS volumes (axes permuted and flipped); the second has no spleen."""
    folder = tmp_path / "test"
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    affine = np.array([[0, 0, -3.0, 10], [-1.0, 0, 0, 5], [0, 2.0, 0, -7], [0, 0, 0, 1]])  # P, S, L
    training = []
    for index in range(2):
        label = np.zeros((14, 10, 8), dtype=np.uint8)
        label[3:8, 3:6, 2:5] = 1
        if index == 0:
            label[9:12, 5:8, 3:6] = 2
        image = np.full(label.shape, -1000.0)
        image[2:13, 2:9, 1:7] = 0.0
        image[label > 0] = 100.0 * label[label > 0]
        training.append(write_case(folder, f"c{index}", image, label, affine))
    labels = {"1": "liver", "2": "spleen", "3": "pancreas"}
    (folder / "dataset.json").write_text(json.dumps({"labels": labels, "training": training}))
    return folder


@pytest.mark.parametrize(
    "preprocess",
    [PreprocessConfig(), PreprocessConfig(spacing=(1.0, 1.0, 1.0), crop_foreground=True)],
    ids=["defaults", "resampled-and-cropped"],
)
def test_perfect_model_scores_perfectly_in_the_original_space(non_ras_folder, preprocess):
    cases = load_folder(non_ras_folder, ORGANS, (-325.0, 325.0), preprocess=preprocess)
    result = evaluate(ReadsLabelsFromIntensity(), cases, "softmax", EVAL, len(ORGANS))
    liver_voxels = 2 * 5 * 3 * 3  # two volumes
    spleen_voxels = 3 * 3 * 3
    assert result.counts.tolist() == [[liver_voxels, 0, 0], [spleen_voxels, 0, 0], [0, 0, 0]]
    assert dice_from_counts(result.counts)[:2].tolist() == [1.0, 1.0]
    # Spleen HD95 is defined in one volume only, pancreas in none.
    assert result.hd95_mm[:2].tolist() == [0.0, 0.0] and np.isnan(result.hd95_mm[2])
    assert result.seconds_per_volume > 0


def test_hd95_is_in_mm_of_the_original_grid(non_ras_folder):
    class ShiftsTheLiver(ReadsLabelsFromIntensity):
        """Perfect, except the liver is predicted 2 voxels further along RAS x."""

        def forward(self, image):
            logits = super().forward(image)
            liver = torch.zeros_like(logits[:, 1])
            liver[:, 2:] = logits[:, 1, :-2]
            logits[:, 1] = liver
            logits[:, 0] = torch.where(liver > 0, 0.0, logits[:, 0])
            return logits

    # RAS x is the file's third axis, 3 mm per voxel, along which the 5x3x3-voxel liver is 3 thick.
    # Shifted by 2 voxels, the prediction's surface voxels are one face on the reference's far face
    # (15 at 0 mm), the middle layer's rim (12 at 3 mm) and the far face (15 at 6 mm); the same
    # the other way round. The 95th percentile of 42 distances lies among the 15 largest: 6 mm.
    cases = load_folder(non_ras_folder, ORGANS, (-325.0, 325.0))
    result = evaluate(ShiftsTheLiver(), cases, "softmax", EVAL, len(ORGANS))
    assert result.hd95_mm[0] == pytest.approx(6.0)
    assert result.hd95_mm[1] == 0.0
    liver_voxels = 2 * 5 * 3 * 3
    assert result.counts[0].tolist() == [liver_voxels // 3, liver_voxels * 2 // 3, liver_voxels * 2 // 3]


def test_evaluation_without_hd95_is_nan_per_organ():
    restored = Evaluation(np.zeros((3, 3), dtype=np.int64), 0.5)  # e.g. from an older checkpoint
    assert restored.hd95_mm.shape == (3,) and np.isnan(restored.hd95_mm).all()
    assert hd95_metric("liver") == "hd95/liver"


def test_sigmoid_and_softmax_labels_follow_one_rule():
    from fedray.training.evaluate import logits_to_labels

    # Four voxels, two organs. Softmax logits (background, organ 1, organ 2); sigmoid logits (organ 1, 2).
    # Voxel 0: organ 1 has p = 0.4 and wins the arg-max (background 0.3): background under the rule.
    # Voxel 1: organ 2 has p = 0.6: organ 2. Voxel 2: background p = 0.8. Voxel 3: organ 1 p = 0.51.
    softmax_p = torch.tensor([[0.3, 0.4, 0.3], [0.2, 0.2, 0.6], [0.8, 0.1, 0.1], [0.29, 0.51, 0.2]])
    softmax_logits = softmax_p.log().T.reshape(1, 3, 4, 1, 1)
    assert logits_to_labels(softmax_logits, "softmax").flatten().tolist() == [0, 2, 0, 1]
    # Sigmoid: the same probabilities per organ give the same labels; two organs above 0.5 (voxel 3's
    # 0.51 and 0.9) go to the more probable; none above 0.5 is background.
    sigmoid_p = torch.tensor([[0.4, 0.3], [0.2, 0.6], [0.1, 0.1], [0.51, 0.9]])
    sigmoid_logits = torch.logit(sigmoid_p).T.reshape(1, 2, 4, 1, 1)
    assert logits_to_labels(sigmoid_logits, "sigmoid").flatten().tolist() == [0, 2, 0, 2]


def test_per_volume_dice_is_the_mean_of_each_volumes_dice():
    from fedray.training.evaluate import CaseScore, combine

    def score(counts, hd95, missed):
        counts = np.array(counts)
        return CaseScore("c", counts, np.array(hd95), np.array(missed), np.full(len(counts), np.nan), 1.0)

    # Organ 1: Dice 1.0 in a small volume, 0.5 in a large one; organ 2: missed in the first volume
    # (Dice 0, HD95 the penalty 100), absent from both maps in the second (NaN, skipped).
    scores = [
        score([[2, 0, 0], [0, 0, 4]], [0.0, 100.0], [False, True]),
        score([[10, 10, 10], [0, 0, 0]], [6.0, np.nan], [False, False]),
    ]
    result = combine(scores, 2)
    assert result.dice_per_volume.tolist() == [0.75, 0.0]
    assert dice_from_counts(result.counts)[0] == 24 / 44  # pooled: 2*12 / (2*12 + 10 + 10)
    assert result.hd95_mm.tolist() == [3.0, 100.0]
    assert result.hd95_missed.tolist() == [0, 1]
    assert [r["hd95_missed"] for r in result.cases] == [0, 1, 0, 0]
