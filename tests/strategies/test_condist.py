"""ConDistFL: what the ConDist loss conditions on, its teacher, its weight ramp, its hooks."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from fedray.configtypes import build
from fedray.errors import ConfigError
from fedray.training.hooks import Batch, ClientContext
from fedray.strategies.condist import ConDist
from fedray.strategies.marginal import Marginal
from fedray.methods import ConDistParams, MarginalParams
from fedray.training.local import train_locally
from fedray.training.partial_losses import condist_loss

# bg + 3 organs; both samples come from a site that labels organ 1 only.
LABELLED = torch.tensor([[True, False, False], [True, False, False]])


def logits_and_label(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    student = 3 * torch.randn(2, 4, 4, 4, 2)
    teacher = 3 * torch.randn(2, 4, 4, 4, 2)
    label = torch.randint(0, 2, (2, 1, 4, 4, 2))
    return student, teacher, label


def test_student_changes_on_local_foreground_do_not_count():
    student, teacher, label = logits_and_label()
    base = condist_loss(student, teacher, label, LABELLED, temperature=2.0)
    local = (label == 1) | (teacher.argmax(dim=1, keepdim=True) == 1)  # GT or teacher says organ 1
    assert local.any() and (~local).any()
    changed = student + 5 * torch.randn_like(student) * local
    assert torch.isclose(condist_loss(changed, teacher, label, LABELLED, 2.0), base, atol=1e-6)
    changed = student + 5 * torch.randn_like(student) * ~local
    assert not torch.isclose(condist_loss(changed, teacher, label, LABELLED, 2.0), base, atol=1e-3)


def test_logits_of_labelled_organs_are_not_distilled():
    student, teacher, label = logits_and_label(1)
    base = condist_loss(student, teacher, label, LABELLED, temperature=2.0)
    changed = student.clone()
    changed[:, 1] += torch.randn_like(changed[:, 1])  # organ 1, labelled here
    # q_c = p_c / (1 - p_1 + eps) does not depend on z_1 up to eps = 1e-5.
    assert torch.isclose(condist_loss(changed, teacher, label, LABELLED, 2.0), base, atol=1e-4)
    changed[:, 2] += torch.randn_like(changed[:, 2])  # organ 2, unlabelled: distilled
    assert not torch.isclose(condist_loss(changed, teacher, label, LABELLED, 2.0), base, atol=1e-3)


def test_zero_when_student_equals_a_confident_teacher():
    torch.manual_seed(2)
    classes = torch.randint(0, 4, (2, 4, 4, 2))
    teacher = 40 * nn.functional.one_hot(classes, 4).movedim(-1, 1).float()
    label = torch.zeros(2, 1, 4, 4, 2, dtype=torch.long)
    assert condist_loss(teacher.clone(), teacher, label, LABELLED, temperature=2.0) < 1e-4
    student = teacher.roll(1, dims=1)  # a different confident prediction
    assert condist_loss(student, teacher, label, LABELLED, temperature=2.0) > 0.5


def test_high_temperature_flattens_towards_uniform_groups_with_smaller_gradients():
    student, teacher, label = logits_and_label(3)
    norms, losses = [], []
    for temperature in (1.0, 2.0, 8.0, 32.0):
        student_leaf = student.clone().requires_grad_()
        loss = condist_loss(student_leaf, teacher, label, LABELLED, temperature)
        loss.backward()
        norms.append(student_leaf.grad.norm().item())
        losses.append(loss.item())
    assert norms == sorted(norms, reverse=True)
    # Uniform q over 3 groups (bg, organ 2, organ 3): Dice 1/3, loss 2/3.
    assert losses[-1] == pytest.approx(2 / 3, abs=2e-3)


def test_weight_ramp_follows_the_reference():
    params = ConDistParams()
    assert params.weight(1) == pytest.approx(0.01)
    assert params.weight(61) == pytest.approx(0.01 + 60 * 0.99 / 119)
    assert params.weight(120) == pytest.approx(1.0)
    assert params.weight(500) == pytest.approx(1.0)
    assert ConDistParams(weight_range=(0.3, 0.3)).weight(17) == pytest.approx(0.3)
    with pytest.raises(ConfigError, match="temperature"):
        build(ConDistParams, {"temperature": 0.0})


def test_hooks_freeze_the_round_start_model_and_train_with_the_shared_loop():
    torch.manual_seed(4)
    model = nn.Conv3d(1, 4, kernel_size=1)
    context = ClientContext(
        hospital_id="a", round=120, labelled=(True, False, False), output="softmax"
    )
    hooks = ConDist(ConDistParams()).client_hooks(context)
    hooks.on_train_start(model, model.state_dict())
    start = {k: v.clone() for k, v in model.state_dict().items()}
    assert not hooks.teacher.training
    assert not any(p.requires_grad for p in hooks.teacher.parameters())
    image = torch.randn(2, 1, 4, 4, 4)
    batch = Batch(image, torch.randint(0, 2, (2, 1, 4, 4, 4)), LABELLED)
    expected = condist_loss(model(image), model(image).detach(), batch.label, LABELLED, 2.0)
    assert torch.isclose(hooks.extra_loss(model, batch, model(image)), expected)  # weight 1.0
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    result = train_locally(model, itertools.repeat(batch), 2, optimizer, hooks)
    assert result.mean_loss == result.mean_loss  # not NaN
    assert not torch.equal(model.weight, start["weight"])
    for name, value in hooks.teacher.state_dict().items():
        assert torch.equal(value, start[name])


@pytest.mark.parametrize(
    ("strategy", "name"),
    [(ConDist(ConDistParams()), "condist"), (Marginal(MarginalParams()), "marginal")],
)
def test_softmax_methods_refuse_a_sigmoid_model(strategy, name):
    context = ClientContext(hospital_id="a", round=1, labelled=(True,), output="sigmoid")
    with pytest.raises(ConfigError, match=f"{name} needs model.output: softmax"):
        strategy.client_hooks(context)


def test_condist_server_weights_clients_equally():
    assert ConDist(ConDistParams()).client_weight(9) == 1.0


class _Vector(nn.Module):
    def __init__(self, values: list[float]) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(values))


def test_gradient_norm_is_clipped_to_one_like_the_reference():
    model = _Vector([0.0, 0.0])
    model.w.grad = torch.tensor([3.0, 4.0])  # norm 5 -> scaled by 1/5
    context = ClientContext(hospital_id="a", round=1, labelled=(True, False, False), output="softmax")
    ConDist(ConDistParams()).client_hooks(context).before_step(model)
    assert torch.allclose(model.w.grad, torch.tensor([0.6, 0.8]), atol=1e-6)
    model.w.grad = torch.tensor([0.3, 0.4])  # norm 0.5 < 1: unchanged
    ConDist(ConDistParams()).client_hooks(context).before_step(model)
    assert torch.allclose(model.w.grad, torch.tensor([0.3, 0.4]))


@pytest.mark.parametrize(("keep", "expected"), [(True, 0.71), (False, 0.8)])
def test_momentum_buffer_crosses_rounds_through_the_hospitals_client_state(keep, expected):
    from fedray.training.local import make_optimizer, reset_optimizer

    # Loss sum(w), so every gradient is 1; SGD lr 0.1, momentum 0.9. Round 1: buf = 1, w = 1 - 0.1
    # = 0.9. Round 2 with the kept buffer: buf = 0.9 * 1 + 1 = 1.9, w = 0.9 - 0.19 = 0.71; with a
    # fresh buffer: buf = 1, w = 0.8.
    model = _Vector([1.0])
    optimizer = make_optimizer(model, "sgd", 0.1, 0.9, 0.0)
    strategy = ConDist(ConDistParams(keep_optimizer_state=keep, grad_clip_norm=0.0))
    kept = None
    for round_index in (1, 2):
        context = ClientContext(
            hospital_id="a", round=round_index, labelled=(True, False, False), output="softmax",
            client_state=kept,
        )
        hooks = strategy.client_hooks(context)
        reset_optimizer(optimizer, 0.1)
        hooks.prepare_optimizer(model, optimizer)
        optimizer.zero_grad()
        model.w.sum().backward()
        optimizer.step()
        state = hooks.client_state(model)
        kept = None if state is None else {k: torch.from_numpy(v) for k, v in state.items()}
    assert (kept is not None) == keep
    assert model.w.item() == pytest.approx(expected)


@pytest.mark.ray
def test_condist_study_keeps_each_hospitals_momentum_across_rounds(tmp_path, ray_local):
    from fedray.messages import decode_state
    from fedray.tracking.client_store import ClientStateStore
    from tests.conftest import train_tiny_study

    model = {"name": "multihead_unet", "output": "softmax", "channels": [4, 8], "blocks": [1, 1], "norm_groups": 4}
    config, _, summary = train_tiny_study(
        tmp_path, "condist", method={"name": "condist", "params": {"ramp_rounds": 2}}, model=model,
        train={"local_steps": 2, "batch_size": 1, "optimizer": "sgd", "lr": 0.01, "momentum": 0.9},
    )
    assert math.isfinite(summary["train/loss"])
    store = ClientStateStore(config.run_dir / "client_state")
    for hospital in "abc":
        kept = decode_state(store.get(hospital, 3))  # the state it would start round 3 from
        buffers = {k for k in kept if k.endswith(".momentum_buffer")}
        assert "optimizer.stem.weight.momentum_buffer" in buffers
        assert all(np.isfinite(v).all() for v in kept.values())
