"""A hospital actor: hosts one or more hospitals, keeps their data and a model resident, trains on request."""

from __future__ import annotations

import logging
import os
import time

import numpy as np
import ray
import torch

from fedray.config import StudyConfig
from fedray.data.datasets import PatchSampler, load_hospital_cases
from fedray.data.federation import Hospital
from fedray.errors import FedrayError
from fedray.messages import ClientResult, RoundAccount, RoundPart, decode_state, encode_state
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
    """Runs local training for the hospitals it hosts; keeps their data, one model and a teacher cache.

    Nothing a result depends on survives a task: weights come with each task and RNG from the seed.
    """

    def __init__(
        self, config: StudyConfig, hospitals: list[Hospital], threads: int, gpu_memory_fraction: float = 0.0
    ) -> None:
        torch.set_num_threads(max(1, threads))
        self.config = config
        # Ray narrows CUDA_VISIBLE_DEVICES to the actor's GPU, so it is always index 0 here.
        use_gpu = gpu_memory_fraction > 0 and torch.cuda.is_available()
        self.device = torch.device("cuda", 0) if use_gpu else torch.device("cpu")
        if self.device.type == "cuda":
            # Ray only books fractional GPUs; this makes the share a hard cap on the allocator.
            torch.cuda.set_per_process_memory_fraction(min(1.0, gpu_memory_fraction), self.device)
        organs = list(config.data.organs)
        self.strategy = build_strategy(config.method)
        self.model = build_model(config.model, len(organs)).to(self.device)
        self.hospitals = {h.hospital_id: h for h in hospitals}
        self._teachers: dict[str, torch.nn.Module] = {}
        self.samplers = {
            h.hospital_id: PatchSampler(
                load_hospital_cases(h, config.data),
                config.data.patch_size,
                config.data.foreground_ratio,
                config.train.batch_size,
                augment=config.data.preprocess.augment,
            )
            for h in hospitals
        }

    def pid(self) -> int:
        """Process id of this actor (fault-injection tests kill it)."""
        return os.getpid()

    def node_id(self) -> str:
        """The Ray node this actor runs on (placement tests check the spread)."""
        return ray.get_runtime_context().get_node_id()

    def hosted(self) -> list[str]:
        """Ids of the hospitals on this actor (returns once their data is loaded)."""
        return list(self.hospitals)

    def pretrain_teacher(self, hospital_id: str, steps: int) -> bytes:
        """Train an organ-specific teacher on this hospital alone: one head per organ it labels.

        Uses the shared local loop with plain supervised hooks; round index 0 seeds it.
        """
        cfg = self.config
        hospital = self.hospitals[hospital_id]
        seed = task_seed(cfg.seed, 0, hospital.index)
        torch.manual_seed(seed)
        own = [k for k, organ in enumerate(cfg.data.organs) if organ in hospital.organs]
        teacher = build_model(cfg.model, len(own)).to(self.device)
        hooks = TeacherHooks(own, ClientContext(hospital_id, 0, tuple(True for _ in own), "sigmoid"))
        optimizer = make_optimizer(teacher, cfg.train.optimizer, cfg.train.lr, cfg.train.momentum, cfg.train.weight_decay)
        train_locally(teacher, self.samplers[hospital_id].batches(seed), steps, optimizer, hooks, self.device)
        return encode_state(hooks.payload(teacher))

    def train_round(
        self,
        round_index: int,
        hospital_ids: list[str],
        global_payload: bytes,
        teachers: dict | None = None,
        client_states: dict[str, bytes] | None = None,
        slowdown: dict[str, float] | None = None,
        deadline_s: float | None = None,
    ) -> RoundPart:
        """One round of local training for each of `hospital_ids`, each starting from the global weights.

        Methods whose aggregation is a weighted sum get one partial sum of this actor's updates (the
        driver then holds one model per actor); others get every update. A hospital whose training
        raises is reported in `failed` for the driver to retry; a configuration error propagates.
        `slowdown` (simulated stragglers) scales a hospital's measured time before the deadline check.
        `teachers` maps organ index -> (teacher id, head, head count, payload); decoded teachers are
        cached on the actor by teacher id.
        """
        global_state = decode_state(global_payload)
        ledger = RoundLedger(self.strategy, global_state) if self.strategy.partial_aggregation else None
        bytes_down = len(global_payload) if self.strategy.communicates else 0
        results, failed, states = [], [], []
        for hospital_id in hospital_ids:
            try:
                update, loss, seconds, state = self._train_hospital(
                    hospital_id, round_index, global_state, teachers or {}, (client_states or {}).get(hospital_id)
                )
            except FedrayError:
                raise
            except Exception as error:  # noqa: BLE001 - reported, retried by the driver, then dropped
                log.warning("local training of %s failed in round %d: %r", hospital_id, round_index, error)
                failed.append((hospital_id, repr(error)))
                continue
            late = deadline_s is not None and seconds * (slowdown or {}).get(hospital_id, 1.0) > deadline_s
            result = ClientResult(
                hospital_id=hospital_id,
                round=round_index,
                payload=encode_state(update) if self.strategy.communicates else b"",
                num_examples=self.hospitals[hospital_id].num_cases,
                train_loss=loss,
                train_seconds=seconds,
                bytes_down=bytes_down,
                late=late,
            )
            if ledger is not None:
                ledger.add(result)
            else:
                results.append(result)
            if state is not None:
                states.append((hospital_id, encode_state(state)))
        extra = {"failed": tuple(failed), "client_states": tuple(states)}
        if ledger is not None:
            return ledger.part(round_index, **extra)
        return RoundPart(round=round_index, account=RoundAccount(), results=tuple(results), **extra)

    def _train_hospital(
        self, hospital_id: str, round_index: int, global_state: dict, teachers: dict, client_state: bytes | None
    ) -> tuple[dict, float, float, dict | None]:
        """Local training of one hospital: (update, mean loss, seconds of the bare update, state to keep)."""
        hospital = self.hospitals[hospital_id]
        cfg = self.config
        weights = {k: v.to(self.device) for k, v in state_to_torch(global_state).items()}
        self.model.load_state_dict(weights)
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
        hooks.on_train_start(self.model, weights)
        optimizer = make_optimizer(
            self.model,
            cfg.train.optimizer,
            cfg.train.lr_at(round_index, cfg.rounds),
            cfg.train.momentum,
            cfg.train.weight_decay,
        )
        start = time.perf_counter()
        local = train_locally(
            self.model, self.samplers[hospital_id].batches(seed), cfg.train.local_steps, optimizer, hooks, self.device
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

