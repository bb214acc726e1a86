"""Local-only models merged into one multi-organ output: channel c of model m, each model run once."""

from __future__ import annotations

import torch
from torch import nn

from fedray.models.ensemble import OrganEnsemble


class Constant(nn.Module):
    """Returns channels filled with `values` and counts its calls."""

    def __init__(self, values: list[float]) -> None:
        super().__init__()
        self.values = torch.tensor(values).view(1, -1, 1, 1, 1)
        self.calls = 0

    def forward(self, image):
        self.calls += 1
        return self.values.expand(image.shape[0], -1, *image.shape[2:])


def test_each_organ_comes_from_its_owner_and_each_model_runs_once():
    a, b = Constant([1.0, 2.0, 3.0]), Constant([10.0, 20.0, 30.0])
    ensemble = OrganEnsemble([a, b], picks=[(0, 0), (1, 1), (0, 2)])  # organ 1 owned by b
    out = ensemble(torch.zeros(2, 1, 4, 4, 4))
    assert out.shape == (2, 3, 4, 4, 4)
    assert out[0, :, 0, 0, 0].tolist() == [1.0, 20.0, 3.0]
    assert a.calls == 1 and b.calls == 1
