"""A hospital actor: hosts one or more hospitals, keeps their data and a model resident, trains on request."""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from fedray.config import StudyConfig
from fedray.data.datasets import PatchSampler, load_hospital_cases
from fedray.data.federation import Hospital
from fedray.messages import ClientResult, decode_state, encode_state
from fedray.models.factory import build_model
from fedray.strategies import build_strategy
from fedray.strategies.base import ClientContext, state_to_torch
from fedray.strategies.fedkd import TeacherHooks
from fedray.training.local import make_optimizer, train_locally


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
            )
            for h in hospitals
        }

    def pid(self) -> int:
        """Process id of this actor (fault-injection tests kill it)."""
        return os.getpid()

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

    def train(
        self, hospital_id: str, round_index: int, global_payload: bytes, teachers: dict | None = None
    ) -> ClientResult:
        """One round of local training for `hospital_id`, starting from the global weights.

        `teachers` maps organ index -> (teacher id, head, head count, payload) for methods that distil from
        organ-specific teachers; decoded teachers are cached on the actor by teacher id.
        """
        start = time.perf_counter()
        hospital = self.hospitals[hospital_id]
        cfg = self.config
        global_state = {k: v.to(self.device) for k, v in state_to_torch(decode_state(global_payload)).items()}
        self.model.load_state_dict(global_state)
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
                    for organ, (teacher_id, head, n_heads, payload) in (teachers or {}).items()
                    if cfg.data.organs[organ] not in hospital.organs
                },
            )
        )
        hooks.on_train_start(self.model, global_state)
        optimizer = make_optimizer(
            self.model,
            cfg.train.optimizer,
            cfg.train.lr_at(round_index, cfg.rounds),
            cfg.train.momentum,
            cfg.train.weight_decay,
        )
        local = train_locally(
            self.model, self.samplers[hospital_id].batches(seed), cfg.train.local_steps, optimizer, hooks, self.device
        )
        return ClientResult(
            hospital_id=hospital_id,
            round=round_index,
            payload=encode_state(hooks.payload(self.model)),
            num_examples=hospital.num_cases,
            train_loss=local.mean_loss,
            train_seconds=time.perf_counter() - start,
            bytes_down=len(global_payload),
        )

    def _teacher(self, teacher_id: str, n_heads: int, payload: bytes) -> torch.nn.Module:
        """A frozen teacher, decoded once per actor (teachers never change after pre-training)."""
        if teacher_id not in self._teachers:
            state = decode_state(payload)
            teacher = build_model(self.config.model, n_heads).to(self.device)
            teacher.load_state_dict(state_to_torch(state))
            self._teachers[teacher_id] = teacher.eval().requires_grad_(False)
        return self._teachers[teacher_id]

