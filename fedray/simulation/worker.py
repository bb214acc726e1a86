"""A hospital actor: hosts one or more hospitals, keeps their data and a model resident, trains on request."""

from __future__ import annotations

import time

import numpy as np
import torch

from fedray.config import StudyConfig
from fedray.data.datasets import PatchSampler, load_folder
from fedray.data.federation import Hospital
from fedray.messages import ClientResult, decode_state, encode_state
from fedray.models.factory import build_model
from fedray.strategies import build_strategy
from fedray.strategies.base import ClientContext, state_to_torch
from fedray.training.local import make_optimizer, train_locally


def task_seed(seed: int, round_index: int, hospital_index: int) -> int:
    """One RNG seed per (study seed, round, hospital), independent of which actor runs the task."""
    return int(np.random.SeedSequence([seed, round_index, hospital_index]).generate_state(1)[0])


class HospitalWorker:
    """Runs local training for the hospitals it hosts. Holds no state that outlives a task but data."""

    def __init__(self, config: StudyConfig, hospitals: list[Hospital], threads: int) -> None:
        torch.set_num_threads(max(1, threads))
        self.config = config
        organs = list(config.data.organs)
        self.strategy = build_strategy(config.method.name, config.method.params)
        self.model = build_model(config.model, len(organs))
        self.hospitals = {h.hospital_id: h for h in hospitals}
        self.samplers = {
            h.hospital_id: PatchSampler(
                load_folder(h.folder, organs, config.data.hu_window),
                config.data.patch_size,
                config.data.foreground_ratio,
                config.train.batch_size,
            )
            for h in hospitals
        }

    def hosted(self) -> list[str]:
        """Ids of the hospitals on this actor (returns once their data is loaded)."""
        return list(self.hospitals)

    def train(self, hospital_id: str, round_index: int, global_payload: bytes) -> ClientResult:
        """One round of local training for `hospital_id`, starting from the global weights."""
        start = time.perf_counter()
        hospital = self.hospitals[hospital_id]
        cfg = self.config
        global_state = state_to_torch(decode_state(global_payload))
        self.model.load_state_dict(global_state)
        seed = task_seed(cfg.seed, round_index, hospital.index)
        torch.manual_seed(seed)
        hooks = self.strategy.client_hooks(
            ClientContext(
                hospital_id=hospital_id,
                round=round_index,
                labelled=tuple(o in hospital.organs for o in cfg.data.organs),
                output=cfg.model.output,
            )
        )
        hooks.on_train_start(self.model, global_state)
        optimizer = make_optimizer(
            self.model, cfg.train.optimizer, cfg.train.lr, cfg.train.momentum, cfg.train.weight_decay
        )
        local = train_locally(
            self.model, self.samplers[hospital_id].batches(seed), cfg.train.local_steps, optimizer, hooks
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
