"""Several models answering as one: each output channel taken from the model that owns it."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class OrganEnsemble(nn.Module):
    """Concatenates channel `c` of model `m` for each (m, c) in `picks`, running every model once.

    Local-only training ends with one model per hospital; this turns them into the same one
    multi-organ output (organ k from the hospital that labels it) that every other method produces,
    so evaluation and inference timing are identical. Sigmoid outputs only: each channel is one organ.
    """

    def __init__(self, models: list[nn.Module], picks: list[tuple[int, int]]) -> None:
        super().__init__()
        self.members = nn.ModuleList(models)
        self.picks = picks

    def forward(self, image: Tensor) -> Tensor:
        outputs = [member(image) for member in self.members]
        return torch.cat([outputs[m][:, c : c + 1] for m, c in self.picks], dim=1)
