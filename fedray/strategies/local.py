"""Local-only training: each hospital trains alone and never shares weights (the lower reference)."""

from __future__ import annotations

import copy

from torch import Tensor, nn

from fedray.messages import State
from fedray.models.ensemble import OrganEnsemble
from fedray.strategies.base import ClientStates, Strategy, organ_owners, state_to_torch
from fedray.training.hooks import ClientHooks


class LocalHooks(ClientHooks):
    """Client half: continue from this hospital's own model (the shared initial weights in round 1)."""

    def on_train_start(self, model: nn.Module, global_state: dict[str, Tensor]) -> None:
        """Load the hospital's own weights over the broadcast initial ones, once it has any."""
        if self.context.client_state is not None:
            model.load_state_dict(self.context.client_state)

    def payload(self, model: nn.Module) -> State:
        """Nothing leaves the hospital."""
        return {}

    def client_state(self, model: nn.Module) -> State:
        """The hospital's whole model, kept for its next round (by hospital id, not by actor)."""
        return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


class LocalOnly(Strategy):
    """Every hospital trains its own model on its own partial labels with the masked sigmoid loss.

    Every weight stays local, so nothing is communicated and every byte count is 0 (round 1 starts
    from the study's shared initial weights, which every hospital can draw from the seed). Hospitals
    keep their models in the driver's ClientStateStore. Evaluation predicts each organ with the model
    of the hospital that labels it (most cases first), merged into the same multi-organ label map as
    every other method.
    """

    client_hooks_class = LocalHooks

    def local_keys(self, model: nn.Module) -> set[str]:
        """Every weight."""
        return set(model.state_dict())

    def evaluation_model(self, model: nn.Module, round_index: int, client_states: ClientStates) -> nn.Module:
        """Each organ from its owner's latest model (the initial weights for an owner not trained yet)."""
        models, picks, column = [], [], {}
        for k, hospital in organ_owners(self.organs, self.hospitals).items():
            if hospital.hospital_id not in column:
                own = copy.deepcopy(model)
                state = client_states.get(hospital.hospital_id, round_index + 1)
                if state is not None:
                    own.load_state_dict(state_to_torch(state))
                column[hospital.hospital_id] = len(models)
                models.append(own)
            picks.append((column[hospital.hospital_id], k))
        return OrganEnsemble(models, picks)
