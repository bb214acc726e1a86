"""FedKD: soft-target BCE by hand, which organs each KD term touches, and a study on Ray actors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fedray.config import config_from_data, with_absolute_paths
from fedray.data.federation import Hospital, prepare_hospitals
from fedray.errors import ConfigError
from fedray.methods import FedKDParams
from fedray.strategies.fedkd import FedKD, FedKDHooks, soft_target_bce
from fedray.training.hooks import Batch, ClientContext
from tests.conftest import tiny_study


class Fixed(nn.Module):
    """A 'model' returning fixed logits for any input (B, 1, ...) -> (B, C, ...)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], *self.logits.shape[1:])


def batch(n_organs=3, labelled=(True, False, False)):
    return Batch(
        image=torch.zeros(1, 1, 2, 2, 2),
        label=torch.zeros(1, 1, 2, 2, 2, dtype=torch.long),
        labelled=torch.tensor([labelled]),
    )


def hooks(params=FedKDParams(), labelled=(True, False, False), teachers=None):
    return FedKDHooks(params, ClientContext("h", 1, labelled, "sigmoid", {"teachers": teachers or {}}))


def test_soft_target_bce_by_hand():
    student, teacher = torch.tensor([0.0]), torch.tensor([math.log(3.0)])  # teacher p = 0.75
    expected = -(0.75 * math.log(0.5) + 0.25 * math.log(0.5))
    assert soft_target_bce(student, teacher, 1.0).item() == pytest.approx(expected)
    # T divides the teacher's logits: T = 2 -> p = sigmoid(log(3) / 2)
    p = 1 / (1 + 3 ** -0.5)
    assert soft_target_bce(student, teacher, 2.0).item() == pytest.approx(-(p + (1 - p)) * math.log(0.5))


def test_global_kd_has_zero_gradient_when_student_equals_global_model():
    logits = torch.randn(1, 3, 2, 2, 2)
    model = Fixed(logits)
    h = hooks(FedKDParams(teacher_kd_weight=0.0))
    h.on_train_start(model, {})
    out = model(torch.zeros(1, 1, 2, 2, 2))
    h.extra_loss(model, batch(), out).backward()
    assert torch.allclose(model.logits.grad, torch.zeros_like(logits), atol=1e-7)


def test_global_kd_touches_only_unlabelled_organs_unless_asked():
    logits = torch.zeros(1, 3, 2, 2, 2)
    for own_too, expect_own_grad in ((False, False), (True, True)):
        model = Fixed(logits)
        h = hooks(FedKDParams(teacher_kd_weight=0.0, global_kd_on_own_organs=own_too))
        h.on_train_start(model, {})
        with torch.no_grad():
            model.logits.add_(1.0)  # student moved away from the frozen global copy
        h.extra_loss(model, batch(), model(torch.zeros(1, 1, 2, 2, 2))).backward()
        grad = model.logits.grad[0].abs().flatten(1).sum(1)
        assert (grad[0] > 0) == expect_own_grad
        assert grad[1] > 0 and grad[2] > 0


def test_teacher_kd_samples_one_unlabelled_organ_per_step():
    teacher_logits = torch.full((1, 1, 2, 2, 2), 3.0)
    teachers = {1: (Fixed(teacher_logits), 0), 2: (Fixed(teacher_logits), 0)}
    params = FedKDParams(global_kd_weight=0.0, teachers_per_step=1)
    touched = set()
    for seed in range(20):
        torch.manual_seed(seed)
        model = Fixed(torch.zeros(1, 3, 2, 2, 2))
        h = hooks(params, teachers=teachers)
        h.on_train_start(model, {})
        h.extra_loss(model, batch(), model(torch.zeros(1, 1, 2, 2, 2))).backward()
        grad = model.logits.grad[0].abs().flatten(1).sum(1)
        assert grad[0] == 0  # own organ: never distilled from a teacher
        assert int((grad > 0).sum()) == 1
        touched.add(int(grad.argmax()))
    assert touched == {1, 2}


def test_fedkd_needs_a_sigmoid_model():
    with pytest.raises(ConfigError, match="multihead_unet"):
        FedKDHooks(FedKDParams(), ClientContext("h", 1, (True,), "softmax"))


def _hospital(name, index, organs, cases):
    return Hospital(name, index, organs, tuple(object() for _ in range(cases)))


def test_preparation_trains_one_teacher_per_owning_hospital_and_ablations_switch_it_off():
    organs = ("liver", "spleen", "pancreas")
    hospitals = [
        _hospital("a", 0, ("liver", "spleen"), 2),
        _hospital("b", 1, ("liver",), 3),  # most liver cases: liver's owner
        _hospital("c", 2, ("pancreas", "spleen"), 2),  # spleen tie with a: lowest index owns it
    ]
    fedkd = FedKD(FedKDParams(teacher_steps=7))
    fedkd.setup(organs, hospitals, torch.nn.Linear(1, 1))
    jobs = fedkd.preparation()
    assert [(j.key, j.spec) for j in jobs] == [("teacher/a", (0, 1)), ("teacher/b", (0,)), ("teacher/c", (1, 2))]
    for job in jobs[:2]:
        fedkd.prepared(job, b"x" * 10)
    assert [j.key for j in fedkd.preparation()] == ["teacher/c"]  # a resumed study trains only what is missing
    assert fedkd.broadcast(1) == {}  # no teacher is shared before all are trained
    fedkd.prepared(jobs[2], b"y" * 20)
    # organ -> (teacher hospital, head, heads), heads in study-organ order: liver b/0/1, spleen a/1/2, pancreas c/1/2
    assert {k: v[:3] for k, v in fedkd.broadcast(1)["teachers"].items()} == {0: ("b", 0, 1), 1: ("a", 1, 2), 2: ("c", 1, 2)}
    # uploads 10 + 10 + 20; downloads: a lacks pancreas (c: 20), b lacks spleen and pancreas (a, c: 30),
    # c lacks liver (b: 10)
    assert fedkd.preparation_bytes() == 40 + 20 + 30 + 10
    restored = FedKD(FedKDParams(teacher_steps=7))
    restored.setup(organs, hospitals, torch.nn.Linear(1, 1))
    restored.load_state_dict(fedkd.state_dict())
    assert restored.preparation() == [] and restored.broadcast(1)["teachers"] == fedkd.broadcast(1)["teachers"]

    ablation = FedKD(FedKDParams(teacher_kd_weight=0.0))
    ablation.setup(organs, hospitals, torch.nn.Linear(1, 1))
    assert ablation.preparation() == [] and ablation.preparation_bytes() == 0
    assert FedKD(FedKDParams()).client_weight(10) == 1.0


@pytest.mark.ray
@pytest.mark.parametrize("model", ["multihead_unet", pytest.param("unet", marks=pytest.mark.slow)])
def test_fedkd_study_pretrains_teachers_and_counts_their_bytes(tmp_path, ray_local, model):
    from fedray.simulation.launch import run_study

    study = tiny_study(
        tmp_path,
        model={"name": model, "output": "sigmoid", "channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0},
        method={"name": "fedkd", "params": {"teacher_steps": 2}},
        rounds=1,
    )
    config = with_absolute_paths(config_from_data(study))
    hospitals, test_dir = prepare_hospitals(config)
    summary = run_study(config, hospitals, test_dir)
    # 3 hospitals; liver is labelled by a (2 cases) and c (2 cases): a (lower index) teaches liver.
    # Teachers: a, b, c all teach something, so 3 uploads; each hospital downloads the 2 others.
    assert summary["comm/bytes_preparation"] > 0
    model_round_bytes = 2 * 3 * summary["bytes_per_model"]
    assert summary["comm/bytes_total"] == model_round_bytes + summary["comm/bytes_preparation"]
    assert not math.isnan(summary["dice/mean"])
