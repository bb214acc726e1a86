"""Local-only training: each hospital trains alone and never shares weights (the lower reference)."""

from __future__ import annotations

from torch import Tensor, nn

from fedray.messages import State
from fedray.strategies.base import ClientHooks, Strategy


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

    Evaluation predicts each organ with the model of the hospital that labels it (most cases first),
    merged into the same multi-organ label map as every other method; nothing is communicated, so
    every byte count is 0. Hospitals keep their models in the driver's ClientStateStore.
    """

    client_hooks_class = LocalHooks
    communicates = False
    stateful = True
