"""Supervised losses on tiny hand-checked tensors."""

from __future__ import annotations

import torch

from fedray.training.losses import masked_sigmoid_loss, naive_softmax_loss, organ_targets


def test_organ_targets_one_channel_per_organ():
    label = torch.tensor([0, 1, 2, 2]).view(1, 1, 4, 1, 1)
    targets = organ_targets(label, 3)
    assert targets[0, :, :, 0, 0].tolist() == [[0, 1, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0]]


def test_masked_loss_ignores_unlabelled_organs():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, 4)
    label = torch.randint(0, 4, (2, 1, 4, 4, 4))
    labelled = torch.tensor([[True, False, False], [True, True, False]])
    base = masked_sigmoid_loss(logits, label, labelled)
    changed = logits.clone()
    changed[0, 1] += 5.0  # organ 2 is not labelled in sample 0
    changed[:, 2] -= 3.0  # organ 3 is labelled nowhere
    assert torch.allclose(masked_sigmoid_loss(changed, label, labelled), base)
    changed[1, 1] += 5.0  # but organ 2 is labelled in sample 1
    assert not torch.allclose(masked_sigmoid_loss(changed, label, labelled), base)


def test_masked_loss_by_hand():
    # one voxel, one organ, logit 0 -> p = 0.5, target 1
    logits = torch.zeros(1, 1, 1, 1, 1)
    label = torch.ones(1, 1, 1, 1, 1, dtype=torch.long)
    loss = masked_sigmoid_loss(logits, label, torch.tensor([[True]]), bce_weight=1.0)
    dice = 1 - (2 * 0.5 * 1 + 1) / (0.5 + 1 + 1)  # MONAI: 1 - (2I + 1) / (P + G + 1)
    bce = -torch.log(torch.tensor(0.5))
    assert torch.isclose(loss, torch.tensor(dice) + bce, atol=1e-6)


def test_no_labelled_organ_gives_zero_with_gradient():
    logits = torch.randn(1, 2, 2, 2, 2, requires_grad=True)
    loss = masked_sigmoid_loss(logits, torch.zeros(1, 1, 2, 2, 2, dtype=torch.long), torch.zeros(1, 2, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None


def test_naive_softmax_treats_unlabelled_as_background():
    # A perfect, confident prediction of the given labels has a small loss
    label = torch.tensor([0, 1, 2, 0]).view(1, 1, 4, 1, 1)
    logits = torch.full((1, 3, 4, 1, 1), -10.0)
    for i, v in enumerate([0, 1, 2, 0]):
        logits[0, v, i] = 10.0
    assert naive_softmax_loss(logits, label) < 0.01
