"""A hospital actor: loads hospitals' data once into Ray's object store and trains any hospital on request."""

from __future__ import annotations

from fedray.simulation.lean_imports import import_monai

import_monai()  # first, before anything imports MONAI (see lean_imports)

import logging
import os
import time

import numpy as np
import ray
import torch

from fedray.config import StudyConfig
from fedray.data.datasets import PatchSampler, load_training_arrays
from fedray.data.federation import Hospital
from fedray.errors import FedrayError
from fedray.messages import ClientResult, RoundAccount, RoundPart, TaskReport, decode_state, encode_state, encoded_size
from fedray.models.factory import build_model
from fedray.simulation.ledger import RoundLedger
from fedray.strategies import build_strategy
from fedray.strategies.base import ClientContext, state_to_torch
from fedray.strategies.fedkd import TeacherHooks
from fedray.training.local import make_optimizer, train_locally

log = logging.getLogger(__name__)


def task_seed(seed: int, round_index: int, hospital_index: int) -> int:
    """One RNG seed per (study seed, round, hospital), independent of which actor runs the task."""
    return int(np.random.SeedSequence([seed, round_index, hospital_index]).generate_state(1)[0])


class HospitalWorker:
    """Trains hospitals on request: one model, a teacher cache and this round's partial sum.

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
        self.strategy = build_strategy(config.method)
        self.model = build_model(config.model, len(config.data.organs)).to(self.device)
        self._teachers: dict[str, torch.nn.Module] = {}
        self._global: tuple[int, dict, dict] | None = None  # (round, global weights: numpy, torch on device)
        self._sampler = PatchSampler(
            config.data.patch_size,
            config.data.foreground_ratio,
            config.train.batch_size,
            augment=config.data.preprocess.augment,
        )
        self._sums: dict[int, RoundLedger] = {}  # round -> partial sum of the updates trained here
        _warm_up(self.model, self.device, config.data.patch_size)

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

    def pretrain_teacher(self, hospital: Hospital, data: list[dict], steps: int) -> bytes:
        """Train an organ-specific teacher on this hospital alone: one head per organ it labels.

        Uses the shared local loop with plain supervised hooks; round index 0 seeds it.
        """
        cfg = self.config
        seed = task_seed(cfg.seed, 0, hospital.index)
        torch.manual_seed(seed)
        own = [k for k, organ in enumerate(cfg.data.organs) if organ in hospital.organs]
        teacher = build_model(cfg.model, len(own)).to(self.device)
        hooks = TeacherHooks(own, ClientContext(hospital.hospital_id, 0, tuple(True for _ in own), "sigmoid"))
        optimizer = make_optimizer(teacher, cfg.train.optimizer, cfg.train.lr, cfg.train.momentum, cfg.train.weight_decay)
        train_locally(teacher, self._sampler.batches(data, seed), steps, optimizer, hooks, self.device)
        return encode_state(hooks.payload(teacher))

    def train(
        self,
        round_index: int,
        hospital: Hospital,
        data: list[dict],
        global_payload: bytes,
        teachers: dict | None = None,
        client_state: bytes | None = None,
        slowdown: float = 1.0,
        deadline_s: float | None = None,
    ) -> TaskReport:
        """One round of local training for one hospital, starting from the global weights.

        For methods whose aggregation is a weighted sum, the update is folded into this actor's
        partial sum for the round (collected by `flush`) and only a report returns; otherwise the
        report carries the update. Training that raises is reported as failed for the driver to
        retry; a configuration error propagates. `slowdown` (a simulated straggler) scales the
        measured time before the deadline check. `teachers` maps organ index -> (teacher id, head,
        head count, payload); decoded teachers are cached on the actor by teacher id.
        """
        if self._global is None or self._global[0] != round_index:  # decoded once per round and actor
            decoded = decode_state(global_payload)
            weights = {k: v.to(self.device) for k, v in state_to_torch(decoded).items()}
            self._global = (round_index, decoded, weights)
        _, global_state, global_weights = self._global
        try:
            update, loss, seconds, state = self._train_hospital(
                hospital, data, round_index, global_weights, teachers or {}, client_state
            )
        except FedrayError:
            raise
        except Exception as error:  # noqa: BLE001 - reported, retried by the driver, then dropped
            log.warning("local training of %s failed in round %d: %r", hospital.hospital_id, round_index, error)
            return TaskReport(hospital.hospital_id, failed=repr(error))
        summed = self.strategy.partial_aggregation and self.strategy.communicates
        result = ClientResult(
            hospital_id=hospital.hospital_id,
            round=round_index,
            # An update folded into this actor's partial sum is not encoded: only its size is counted.
            payload=encode_state(update) if self.strategy.communicates and not summed else b"",
            num_examples=hospital.num_cases,
            train_loss=loss,
            train_seconds=seconds,
            bytes_down=len(global_payload) if self.strategy.communicates else 0,
            late=deadline_s is not None and seconds * slowdown > deadline_s,
            summed_bytes=encoded_size(update) if summed else None,
        )
        kept = encode_state(state) if state is not None else None
        if not self.strategy.partial_aggregation:
            return TaskReport(hospital.hospital_id, result=result, client_state=kept)
        if round_index not in self._sums:
            self._sums[round_index] = RoundLedger(self.strategy, global_state)
        self._sums[round_index].add(result, update)
        return TaskReport(hospital.hospital_id, client_state=kept)

    def flush(self, round_index: int) -> RoundPart:
        """This actor's partial sum and accounts for the round (then forgotten here)."""
        ledger = self._sums.pop(round_index, None)
        self._sums = {r: s for r, s in self._sums.items() if r > round_index}  # drop abandoned rounds
        if ledger is None:
            return RoundPart(round=round_index, account=RoundAccount())
        return ledger.part(round_index)

    def _train_hospital(
        self,
        hospital: Hospital,
        data: list[dict],
        round_index: int,
        global_weights: dict[str, torch.Tensor],
        teachers: dict,
        client_state: bytes | None,
    ) -> tuple[dict, float, float, dict | None]:
        """Local training of one hospital: (update, mean loss, seconds of the bare update, state to keep)."""
        hospital_id = hospital.hospital_id
        cfg = self.config
        self.model.load_state_dict(global_weights)
        seed = task_seed(cfg.seed, round_index, hospital.index)
        torch.manual_seed(seed)
        hooks = self.strategy.client_hooks(
            ClientContext(
                hospital_id=hospital_id,
                round=round_index,
                labelled=tuple(o in hospital.organs for o in cfg.data.organs),
                output=cfg.model.output,
                teachers={
                    organ: (self._teacher(teacher_id, n_heads, payload), head)
                    for organ, (teacher_id, head, n_heads, payload) in teachers.items()
                    if cfg.data.organs[organ] not in hospital.organs
                },
                client_state=(
                    {k: v.to(self.device) for k, v in state_to_torch(decode_state(client_state)).items()}
                    if client_state is not None
                    else None
                ),
            )
        )
        hooks.on_train_start(self.model, global_weights)
        optimizer = make_optimizer(
            self.model,
            cfg.train.optimizer,
            cfg.train.lr_at(round_index, cfg.rounds),
            cfg.train.momentum,
            cfg.train.weight_decay,
        )
        start = time.perf_counter()
        local = train_locally(
            self.model, self._sampler.batches(data, seed), cfg.train.local_steps, optimizer, hooks, self.device
        )
        seconds = time.perf_counter() - start
        return hooks.payload(self.model), local.mean_loss, seconds, hooks.client_state(self.model)

    def _teacher(self, teacher_id: str, n_heads: int, payload: bytes) -> torch.nn.Module:
        """A frozen teacher, decoded once per actor (teachers never change after pre-training)."""
        if teacher_id not in self._teachers:
            state = decode_state(payload)
            teacher = build_model(self.config.model, n_heads).to(self.device)
            teacher.load_state_dict(state_to_torch(state))
            self._teachers[teacher_id] = teacher.eval().requires_grad_(False)
        return self._teachers[teacher_id]



def _warm_up(model: torch.nn.Module, device: torch.device, patch_size: tuple[int, int, int]) -> None:
    """One throwaway forward/backward/step at construction, so no round pays for lazy initialisation
    (kernel selection, allocator growth, the optimiser's first-step imports)."""
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    model(torch.zeros(1, 1, *patch_size, device=device)).sum().backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    model.load_state_dict(weights)
