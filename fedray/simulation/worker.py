"""A hospital actor: loads hospitals' data once into Ray's object store and runs any hospital's task on request."""

from __future__ import annotations

from fedray.simulation.lean_imports import import_monai

import_monai()  # first, before anything imports MONAI (see lean_imports)

import logging
import os
import time
from typing import Any

import numpy as np
import ray
import torch

from fedray.config import StudyConfig
from fedray.data.datasets import PatchSampler, load_training_arrays
from fedray.data.federation import Hospital
from fedray.errors import FedrayError
from fedray.messages import (
    ClientResult,
    PrepareTask,
    RoundAccount,
    RoundPart,
    TaskReport,
    TrainTask,
    decode_state,
    encode_state,
    encoded_size,
)
from fedray.models.factory import build_model
from fedray.simulation.ledger import RoundLedger
from fedray.strategies import build_strategy
from fedray.strategies.base import state_to_torch
from fedray.training.hooks import ClientContext, ClientHooks
from fedray.training.local import make_optimizer, reset_optimizer, train_locally

log = logging.getLogger(__name__)


def task_seed(seed: int, round_index: int, hospital_index: int) -> int:
    """One RNG seed per (study seed, round, hospital), independent of which actor runs the task."""
    return int(np.random.SeedSequence([seed, round_index, hospital_index]).generate_state(1)[0])


class HospitalWorker:
    """Runs hospitals' tasks on request: one model, the method's decoded broadcast and this round's partial sum.

    A hospital's data is loaded once (`load`, on its home actor) into Ray's object store, from where
    any actor can train it (zero-copy on the same node): the driver hands each idle actor the next
    hospital of the round, so a round is not held up by an unlucky draw of hospitals on one actor.
    Nothing a result depends on survives a task: weights come with each task and RNG from the seed.
    """

    def __init__(self, config: StudyConfig, threads: int, gpu_memory_fraction: float = 0.0) -> None:
        torch.set_num_threads(max(1, threads))
        self.config = config
        # Ray narrows CUDA_VISIBLE_DEVICES to the actor's GPU, so it is always index 0 here.
        use_gpu = gpu_memory_fraction > 0 and torch.cuda.is_available()
        self.device = torch.device("cuda", 0) if use_gpu else torch.device("cpu")
        if self.device.type == "cuda":
            # Ray only books fractional GPUs; this makes the share a hard cap on the allocator.
            torch.cuda.set_per_process_memory_fraction(min(1.0, gpu_memory_fraction), self.device)
        self.model = build_model(config.model, len(config.data.organs)).to(self.device)
        self.strategy = build_strategy(config.method)
        self.strategy.setup(config.data.organs, (), self.model)
        self._global: tuple[int, dict, dict, int] | None = None  # (round, numpy, torch on device, bytes down)
        self._extras: tuple[int, dict, int] | None = None  # (round, opened broadcast, its bytes per hospital)
        self._sampler = PatchSampler(
            config.data.patch_size,
            config.data.foreground_ratio,
            config.train.batch_size,
            augment=config.data.preprocess.augment,
        )
        self._sums: dict[int, RoundLedger] = {}  # round -> partial sum of the updates trained here
        self._runtime = HospitalRuntime(config, self.device, self._sampler)
        _warm_up(self.model, self.device, config.data.patch_size)
        train = config.train
        # One optimiser over self.model for every task, emptied per task (reset_optimizer).
        self._optimizer = make_optimizer(self.model, train.optimizer, train.lr, train.momentum, train.weight_decay)

    def pid(self) -> int:
        """Process id of this actor (fault-injection tests kill it)."""
        return os.getpid()

    def node_id(self) -> str:
        """The Ray node this actor runs on (placement tests check the spread)."""
        return ray.get_runtime_context().get_node_id()

    def ready(self) -> bool:
        """True once the actor is constructed (its process started, libraries imported, warmed up)."""
        return True

    def load(self, hospital: Hospital) -> list[dict]:
        """One hospital's training arrays (preprocessed once; see `load_training_arrays`).

        The driver keeps the returned object: it lives in Ray's object store, owned by the driver,
        so it outlives this actor.
        """
        return load_training_arrays(hospital, self.config.data)

    def run(self, task: TrainTask | PrepareTask) -> TaskReport:
        """Run one task: a round's local training or a preparation job of the method."""
        if isinstance(task, PrepareTask):
            return self._prepare(task)
        return self._train(task)

    def flush(self, round_index: int) -> RoundPart:
        """This actor's partial sum and accounts for the round (then forgotten here)."""
        ledger = self._sums.pop(round_index, None)
        self._sums = {r: s for r, s in self._sums.items() if r > round_index}  # drop abandoned rounds
        if ledger is None:
            return RoundPart(round=round_index, account=RoundAccount())
        return ledger.part(round_index)

    # -- tasks ------------------------------------------------------------------------------------
    def _prepare(self, task: PrepareTask) -> TaskReport:
        hospital = task.job.hospital
        seed = task_seed(self.config.seed, 0, hospital.index)  # round 0 seeds the preparation
        torch.manual_seed(seed)
        data = _resolve(task.data)
        return TaskReport(hospital.hospital_id, prepared=self.strategy.prepare(task.job, data, self._runtime, seed))

    def _train(self, task: TrainTask) -> TaskReport:
        """One round of local training for one hospital, starting from the global weights.

        For methods whose aggregation is a weighted sum, the update is folded into this actor's
        partial sum for the round (collected by `flush`) and only a report returns; otherwise the
        report carries the update. Training that raises is reported as failed for the driver to
        retry; a configuration error propagates. `slowdown` (a simulated straggler) scales the
        measured time before the deadline check.
        """
        round_index, hospital = task.round, task.hospital
        strategy = self.strategy
        if self._global is None or self._global[0] != round_index:  # fetched and decoded once per round and actor
            decoded = decode_state(_resolve(task.global_payload))
            weights = {k: v.to(self.device) for k, v in state_to_torch(decoded).items()}
            self._global = (round_index, decoded, weights, strategy.download_bytes(decoded))
        if self._extras is None or self._extras[0] != round_index:
            raw = _resolve(task.extras) if task.extras is not None else {}
            self._extras = (round_index, strategy.open_broadcast(raw, self._runtime), strategy.broadcast_bytes(raw))
        _, global_state, global_weights, bytes_down = self._global
        _, extras, extras_bytes = self._extras
        try:
            update, loss, seconds, state = self._train_hospital(
                hospital, _resolve(task.data), round_index, global_weights, extras, task.client_state
            )
        except FedrayError:
            raise
        except Exception as error:  # noqa: BLE001 - reported, retried by the driver, then dropped
            log.warning("local training of %s failed in round %d: %r", hospital.hospital_id, round_index, error)
            return TaskReport(hospital.hospital_id, failed=repr(error))
        summed = strategy.partial_aggregation
        result = ClientResult(
            hospital_id=hospital.hospital_id,
            round=round_index,
            # An update folded into this actor's partial sum is not encoded: only its size is counted.
            payload=encode_state(update) if update and not summed else b"",
            num_examples=hospital.num_cases,
            train_loss=loss,
            train_seconds=seconds,
            bytes_down=bytes_down + extras_bytes,
            late=task.deadline_s is not None and seconds * task.slowdown > task.deadline_s,
            summed_bytes=(encoded_size(update) if update else 0) if summed else None,
        )
        # A diverged update (NaN/inf) is rejected by the ledger; its state is not kept either, so the
        # hospital's next round starts from its last good state (control variates, linear terms, local norms).
        kept = encode_state(state) if state is not None and _finite(update) and _finite(state) else None
        if not summed:
            return TaskReport(hospital.hospital_id, result=result, client_state=kept)
        if round_index not in self._sums:
            self._sums[round_index] = RoundLedger(strategy, global_state)
        self._sums[round_index].add(result, update)
        return TaskReport(hospital.hospital_id, client_state=kept)

    def _train_hospital(
        self,
        hospital: Hospital,
        data: list[dict],
        round_index: int,
        global_weights: dict[str, torch.Tensor],
        extras: dict,
        client_state: bytes | None,
    ) -> tuple[dict, float, float, dict | None]:
        """Local training of one hospital: (update, mean loss, seconds of the bare update, state to keep)."""
        cfg = self.config
        self.model.load_state_dict(global_weights)
        seed = task_seed(cfg.seed, round_index, hospital.index)
        torch.manual_seed(seed)
        lr = cfg.train.lr_at(round_index, cfg.rounds)
        hooks = self.strategy.client_hooks(
            ClientContext(
                hospital_id=hospital.hospital_id,
                round=round_index,
                labelled=tuple(o in hospital.organs for o in cfg.data.organs),
                output=cfg.model.output,
                extras=extras,
                client_state=(
                    {k: v.to(self.device) for k, v in state_to_torch(decode_state(client_state)).items()}
                    if client_state is not None
                    else None
                ),
                lr=lr,
                local_steps=cfg.train.local_steps,
            )
        )
        hooks.on_train_start(self.model, global_weights)
        optimizer = reset_optimizer(self._optimizer, lr)
        start = time.perf_counter()
        local = train_locally(
            self.model, self._sampler.batches(data, seed), cfg.train.local_steps, optimizer, hooks, self.device
        )
        seconds = time.perf_counter() - start
        return hooks.payload(self.model), local.mean_loss, seconds, hooks.client_state(self.model)


class HospitalRuntime:
    """What a hospital actor lends a method's preparation phase and broadcast decoding (ClientRuntime)."""

    def __init__(self, config: StudyConfig, device: torch.device, sampler: PatchSampler) -> None:
        self.config = config
        self.device = device
        self.sampler = sampler
        self.cache: dict[str, Any] = {}  # what the method decodes once per actor

    def build_model(self, n_organs: int) -> torch.nn.Module:
        """The study's network with `n_organs` outputs, on this actor's device."""
        return build_model(self.config.model, n_organs).to(self.device)

    def train_model(self, model: torch.nn.Module, hooks: ClientHooks, data: list[dict], steps: int, seed: int) -> float:
        """`steps` steps of the shared loop with the study's optimiser at its base rate; the mean loss.

        The optimiser is built here, not reused: `model` is a network the method builds, not the actor's."""
        cfg = self.config.train
        optimizer = make_optimizer(model, cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)
        return train_locally(model, self.sampler.batches(data, seed), steps, optimizer, hooks, self.device).mean_loss


def _finite(state: dict) -> bool:
    """True when every floating array of a weight dict is finite."""
    return all(np.isfinite(v).all() for v in state.values() if np.issubdtype(np.asarray(v).dtype, np.floating))


def _resolve(value: Any) -> Any:
    """A task field's value: fetched from Ray's object store when it is a reference (as the driver
    sends them), as it is otherwise (tests and in-process use)."""
    return ray.get(value) if isinstance(value, ray.ObjectRef) else value


def _warm_up(model: torch.nn.Module, device: torch.device, patch_size: tuple[int, int, int]) -> None:
    """One throwaway forward/backward/step at construction, so no round pays for lazy initialisation
    (kernel selection, allocator growth, the optimiser's first-step imports)."""
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    model(torch.zeros(1, 1, *patch_size, device=device)).sum().backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    model.load_state_dict(weights)
