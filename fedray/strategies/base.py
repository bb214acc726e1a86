"""The strategy interface: a method's whole lifecycle, from its preparation phase to the model it is judged by."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from fedray.config import ServerOptimizerConfig
from fedray.messages import State, encoded_size
from fedray.strategies.aggregate import WeightedSum
from fedray.strategies.server_opt import ServerOptimizer
from fedray.training.hooks import ClientContext, ClientHooks, ClientRuntime

if TYPE_CHECKING:
    from fedray.data.federation import Hospital


@dataclass(frozen=True)
class PrepareJob:
    """One piece of a method's preparation phase, run on a hospital's home actor before round 1.

    `key` names the result in the method's state (so a resumed study skips finished jobs); `spec` is
    whatever the job needs besides the hospital's data (picklable).
    """

    key: str
    hospital: Hospital
    spec: Any = None


@dataclass(frozen=True)
class PretrainedModel:
    """A model a method trained before round 1 (a teacher), built like the study's with one head per
    entry of `heads`."""

    heads: tuple[int, ...]  # the study organ index each output head predicts, in head order
    used_for: tuple[int, ...]  # the organs the method uses it for (a teacher's distilled organs)
    state: State


class ClientStates(Protocol):
    """The driver's per-hospital state store, as a method reads it (decoded weight dicts)."""

    def get(self, hospital_id: str, before_round: int) -> State | None:
        """The hospital's latest state from a round before `before_round`, or None."""


class Strategy:
    """A federated method: every phase the round loop runs, with the method's own maths and state.

    The round loop calls, in order: `setup` (driver and every hospital actor), `preparation` /
    `prepare` / `prepared` (before round 1, on the hospitals' actors; checkpointed job by job), then
    each round `broadcast` (extra payloads beside the global weights), the client half
    (`client_hooks`, run in the shared local loop), `new_aggregate` / `client_weight` (the streaming
    sum, pre-summed on actors when `partial_aggregation`) and `server_update`; `evaluation_model` is
    what the test set scores. `state_dict` / `load_state_dict` hold the method's server state, which
    the driver checkpoints without looking inside. Aggregation stays pure numpy over weight dicts.
    A method's parameters and the model output it needs are declared in fedray/methods.py, so that
    loading a config does not import torch.
    """

    client_hooks_class: ClassVar[type[ClientHooks]] = ClientHooks
    # A weighted sum lets each hospital actor pre-sum its hospitals' updates (hierarchical aggregation);
    # a method whose aggregation is not linear sets this False and gets every update one by one.
    partial_aggregation: ClassVar[bool] = True

    def __init__(self, params: object, server: ServerOptimizerConfig | None = None) -> None:
        self.params = params
        self.server_optimizer = ServerOptimizer(server or ServerOptimizerConfig())
        self.organs: tuple[str, ...] = ()
        self.hospitals: tuple[Hospital, ...] = ()
        self.local: frozenset[str] = frozenset()

    # -- set-up (driver: every hospital; hospital actors: none) ---------------------------------
    def setup(self, organs: Sequence[str], hospitals: Sequence[Hospital], model: nn.Module) -> None:
        """Learn the study: its organs, its hospitals (on the driver only) and the network."""
        self.organs, self.hospitals = tuple(organs), tuple(hospitals)
        self.local = frozenset(self.local_keys(model))
        self.parameters = [name for name, _ in model.named_parameters()]  # trainable, in model order

    def local_keys(self, model: nn.Module) -> set[str]:
        """State-dict keys that stay on each hospital and are never sent (FedBN's norms); none by default."""
        return set()

    # -- preparation phase ------------------------------------------------------------------
    def preparation(self) -> list[PrepareJob]:
        """Preparation jobs not finished yet (none by default; a resumed study asks again)."""
        return []

    def prepare(self, job: PrepareJob, data: list[dict], runtime: ClientRuntime, seed: int) -> bytes:
        """Run one preparation job on the hospital's actor; torch is seeded with `seed` (study seed,
        round 0, hospital), which also seeds the job's patches. Returns the job's result."""
        raise NotImplementedError(f"{type(self).__name__} has no preparation phase")

    def prepared(self, job: PrepareJob, result: bytes) -> None:
        """Keep one finished job's result (driver side; part of `state_dict` from now on)."""

    def preparation_bytes(self) -> int:
        """Bytes the preparation phase moved between hospitals (counted once, in comm/bytes_total)."""
        return 0

    def pretrained_models(self) -> dict[str, PretrainedModel]:
        """Models the preparation phase trained, by name (none by default); `fedray teachers` scores
        them on the study's test set."""
        return {}

    # -- each round ---------------------------------------------------------------------------
    def broadcast(self, round_index: int) -> dict[str, Any]:
        """Extra server-to-hospital payloads for this round (the same object again is sent only once)."""
        return {}

    def open_broadcast(self, extras: dict[str, Any], runtime: ClientRuntime) -> dict[str, Any]:
        """Make the broadcast usable on a hospital actor (decode, build models); `runtime.cache` persists."""
        return extras

    def broadcast_bytes(self, extras: dict[str, Any]) -> int:
        """Bytes of `extras` one hospital downloads per round: byte strings count, the rest is counted once."""
        return sum(len(value) for value in extras.values() if isinstance(value, bytes))

    def client_hooks(self, context: ClientContext) -> ClientHooks:
        """Build the client half for one hospital and round (runs on the hospital actor)."""
        return self.client_hooks_class(self.params, context)

    def shared(self, global_state: State) -> State:
        """The part of the global weights that hospitals download (all but `local` keys)."""
        return {k: v for k, v in global_state.items() if k not in self.local} if self.local else global_state

    def download_bytes(self, global_state: State) -> int:
        """What one hospital downloads of the global weights: the encoded shared part (0 if none)."""
        shared = self.shared(global_state)
        return encoded_size(shared) if shared else 0

    def update_template(self, global_state: State) -> State:
        """What a valid update holds (keys and shapes): the shared weights by default."""
        return self.shared(global_state)

    def client_weight(self, num_examples: int) -> float:
        """Aggregation weight of one hospital's update."""
        return float(num_examples)

    def new_aggregate(self) -> WeightedSum:
        """An empty streaming accumulator for one round."""
        return WeightedSum()

    def server_update(self, global_state: State, aggregate: WeightedSum) -> State:
        """New global weights: the weighted mean of the updates, then the server optimiser (FedOpt)."""
        mean = aggregate.mean(global_state)
        if not mean:
            return global_state
        shared = {k: global_state[k] for k in mean}
        return {**global_state, **self.server_optimizer.step(shared, mean)}

    # -- server state ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, bytes]:
        """The method's server state as named byte strings, checkpointed opaquely (no pickle)."""
        from fedray.tracking.checkpoint import torch_state_to_bytes

        optimizer = self.server_optimizer.state_dict()
        return {"server_optimizer": torch_state_to_bytes(optimizer)} if optimizer else {}

    def load_state_dict(self, state: dict[str, bytes]) -> None:
        """Restore what `state_dict` returned."""
        from fedray.tracking.checkpoint import torch_state_from_bytes

        if "server_optimizer" in state:
            self.server_optimizer.load_state_dict(torch_state_from_bytes(state["server_optimizer"]))

    # -- evaluation ------------------------------------------------------------------------------
    def evaluation_model(self, model: nn.Module, round_index: int, client_states: ClientStates) -> nn.Module:
        """The model the test set scores after `round_index`; `model` holds the global weights."""
        return model


def organ_owners(organs: Sequence[str], hospitals: Sequence[Hospital]) -> dict[int, Hospital]:
    """Per organ index, the hospital with the most cases among those labelling it (lowest index on ties)."""
    return {
        k: min((h for h in hospitals if organ in h.organs), key=lambda h: (-h.num_cases, h.index))
        for k, organ in enumerate(organs)
    }


def zeros_like_parameters(model: nn.Module) -> State:
    """A zero array per trainable parameter (the start of a per-parameter server or client state)."""
    return {name: np.zeros(tuple(p.shape), dtype=np.float32) for name, p in model.named_parameters()}


def state_to_torch(state: State) -> dict[str, Tensor]:
    """numpy weight dict -> torch tensors (copies: arrays from Ray's object store are read-only)."""
    return {k: torch.from_numpy(np.array(v, copy=True)) for k, v in state.items()}
