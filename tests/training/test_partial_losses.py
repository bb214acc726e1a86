"""Marginal and exclusion losses on tiny hand-checked tensors."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss

from fedray.training.partial_losses import exclusion_loss, marginal_log_probabilities, marginal_loss


def voxels(values: list[list[float]]) -> torch.Tensor:
    """Per-voxel class logits [[z_0, z_1, ...], ...] -> (1, C, V, 1, 1)."""
    return torch.tensor(values).T.reshape(1, len(values[0]), len(values), 1, 1)


def label_map(values: list[int]) -> torch.Tensor:
    """Per-voxel labels -> (1, 1, V, 1, 1)."""
    return torch.tensor(values).view(1, 1, -1, 1, 1)


def test_marginal_merge_by_hand():
    # bg + 2 organs; the site labels organ 1 only, so organ 2's probability joins background.
    z = [[1.0, 0.5, 2.0], [0.0, 3.0, -1.0]]
    logits, label = voxels(z), label_map([0, 1])
    labelled = torch.tensor([[True, False]])
    p = [[math.exp(v) / sum(math.exp(u) for u in row) for v in row] for row in z]

    merged = marginal_log_probabilities(logits, labelled)[0, :, :, 0, 0].T  # (V, C)
    assert torch.allclose(merged[:, 0].exp(), torch.tensor([p[0][0] + p[0][2], p[1][0] + p[1][2]]))
    assert torch.allclose(merged[:, 1].exp(), torch.tensor([p[0][1], p[1][1]]))
    assert torch.isneginf(merged[:, 2]).all()

    nll = -(math.log(p[0][0] + p[0][2]) + math.log(p[1][1])) / 2
    merged_bg = [p[0][0] + p[0][2], p[1][0] + p[1][2]]
    merged_organ = [p[0][1], p[1][1]]
    dice_bg = 1 - 2 * merged_bg[0] / (sum(merged_bg) + 1 + 1e-5)
    dice_organ = 1 - 2 * merged_organ[1] / (sum(merged_organ) + 1 + 1e-5)
    expected = (dice_bg + dice_organ) / 2 + nll  # organ 2 is labelled by no sample: not averaged
    assert torch.isclose(marginal_loss(logits, label, labelled), torch.tensor(expected), atol=1e-6)


def test_marginal_equals_plain_softmax_loss_when_all_organs_are_labelled():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, 2)
    label = torch.randint(0, 3, (2, 1, 4, 4, 2))
    labelled = torch.ones(2, 2, dtype=torch.bool)
    merged = marginal_log_probabilities(logits, labelled)
    assert torch.allclose(F.nll_loss(merged, label[:, 0]), F.cross_entropy(logits, label[:, 0]))
    plain = DiceCELoss(to_onehot_y=True, softmax=True, batch=True, smooth_nr=0.0, smooth_dr=1e-5)
    assert torch.isclose(marginal_loss(logits, label, labelled), plain(logits, label), atol=1e-6)


def test_marginal_ignores_how_unlabelled_mass_splits_per_sample():
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 4, 4, 2)
    label = torch.randint(0, 2, (2, 1, 4, 4, 2))
    labelled = torch.tensor([[True, False], [True, True]])
    label[1] = torch.randint(0, 3, (1, 4, 4, 2))
    base = marginal_loss(logits, label, labelled)
    # Sample 0: move mass between background and unlabelled organ 2, keeping p̄_0 fixed.
    shifted = logits.clone()
    both = torch.stack([shifted[0, 0], shifted[0, 2]]).logsumexp(0)
    shifted[0, 0] = both - math.log(2)
    shifted[0, 2] = both - math.log(2)
    assert torch.isclose(marginal_loss(shifted, label, labelled), base, atol=1e-5)
    shifted[1, 2] += 1.0  # organ 2 is labelled in sample 1
    assert not torch.isclose(marginal_loss(shifted, label, labelled), base, atol=1e-5)


def test_marginal_gradient_stays_finite_for_confidently_wrong_logits():
    logits = voxels([[-80.0, 80.0, -80.0]]).requires_grad_()
    loss = marginal_loss(logits, label_map([0]), torch.tensor([[True, False]]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    assert logits.grad[0, 1].item() > 0  # gradient descent lowers the wrong organ's logit


ALL_LABELLED = torch.tensor([[True, True]])
ORGAN_1_ONLY = torch.tensor([[True, False]])


def test_exclusion_zero_when_predictions_respect_labels():
    # voxel labels: bg, organ 1, organ 2; the prediction is confident and right.
    logits = voxels([[20.0, -20.0, -20.0], [-20.0, 20.0, -20.0], [-20.0, -20.0, 20.0]])
    assert exclusion_loss(logits, label_map([0, 1, 2]), ALL_LABELLED) < 1e-6


def test_exclusion_penalises_an_organ_inside_another_labelled_organ():
    # Organ 2 is predicted on the voxel labelled organ 1 (and on its own voxel 2).
    logits = voxels([[20.0, -20.0, -20.0], [-20.0, -20.0, 20.0], [-20.0, -20.0, 20.0]])
    # Regions: bg {1, 2}, p_0 ~ 0 there -> 0; organ 1: not-GT_1 = {0, 2}, p_1 ~ 0 -> 0;
    # organ 2: not-GT_2 = {0, 1}, p_2 ~ 1 on {1, 2}: 2 * 1 / (2 + 2) = 1/2. Mean over 3 = 1/6.
    loss = exclusion_loss(logits, label_map([0, 1, 2]), ALL_LABELLED)
    assert torch.isclose(loss, torch.tensor(1 / 6), atol=1e-5)


def test_exclusion_penalises_a_labelled_organ_outside_its_ground_truth_with_one_organ_per_site():
    # Shi et al.'s region for a labelled organ is the whole complement of its ground truth, so
    # the term does not vanish at a site that labels one organ: organ 1 predicted on voxels 0, 1.
    logits = voxels([[-20.0, 20.0, -20.0], [-20.0, 20.0, -20.0], [20.0, -20.0, -20.0]])
    # Regions: bg {1}, p_0(1) ~ 0 -> 0; organ 1: not-GT_1 = {0, 2}, p_1 = 1 on {0, 1}:
    # 2 * 1 / (2 + 2) = 1/2; organ 2 (unlabelled): foreground {1}, p_2 ~ 0 -> 0. Mean 1/6.
    loss = exclusion_loss(logits, label_map([0, 1, 0]), ORGAN_1_ONLY)
    assert torch.isclose(loss, torch.tensor(1 / 6), atol=1e-5)


def test_exclusion_penalises_an_unlabelled_organ_on_labelled_foreground():
    # Only organ 1 is labelled here; organ 2 (unlabelled) predicted on organ 1's voxel.
    logits = voxels([[20.0, -20.0, -20.0], [-20.0, -20.0, 20.0]])
    # Regions: bg {1}, p_0 = 1 on {0}: 0; organ 1: not-GT_1 = {0}, p_1 ~ 0: 0;
    # organ 2: foreground {1}, p_2 = 1 on {1}: 2 / (1 + 1) = 1. Mean 1/3.
    loss = exclusion_loss(logits, label_map([0, 1]), ORGAN_1_ONLY)
    assert torch.isclose(loss, torch.tensor(1 / 3), atol=1e-5)


def test_exclusion_without_labelled_foreground_is_zero_with_gradient():
    logits = torch.randn(1, 3, 2, 2, 2, requires_grad=True)
    no_organ_labelled = torch.tensor([[False, False]])
    loss = exclusion_loss(logits, torch.zeros(1, 1, 2, 2, 2, dtype=torch.long), no_organ_labelled)
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None
