"""FedKD (Kim et al., MedIA 2024): multi-head FedAvg whose local loss distils from the round-start
global model and from pre-trained organ-specific teachers on the organs a hospital does not label."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedray.errors import ConfigError
from fedray.messages import decode_state, encode_state
from fedray.methods import FedKDParams
from fedray.strategies.base import PrepareJob, PretrainedModel, Strategy, organ_owners, state_to_torch
from fedray.training.hooks import Batch, ClientContext, ClientHooks, ClientRuntime
from fedray.training.losses import masked_sigmoid_loss


def soft_target_bce(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """BCE of student logits against the teacher's soft targets sigmoid(teacher / T), mean over voxels.

    Args:
        student: (B, X, Y, Z) or any shape of logits.
        teacher: logits of the same shape (no gradient).
    """
    return F.binary_cross_entropy_with_logits(student, torch.sigmoid(teacher / temperature))


class FedKDHooks(ClientHooks):
    """Client half: supervised masked Dice + BCE, global-model KD and sampled organ-teacher KD."""

    def __init__(self, params: FedKDParams, context: ClientContext) -> None:
        if context.output != "sigmoid":
            raise ConfigError("fedkd needs a per-organ sigmoid model: set model.name: multihead_unet.")
        super().__init__(params, context)
        self.global_model: nn.Module | None = None

    def on_train_start(self, model: nn.Module, global_state: dict[str, Tensor]) -> None:
        """Freeze a copy of the round-start global model as the 'do not forget' teacher."""
        if self.params.global_kd_weight > 0:
            self.global_model = copy.deepcopy(model).eval().requires_grad_(False)

    def supervised_loss(self, logits: Tensor, batch: Batch) -> Tensor:
        """Dice + bce_weight * BCE on the organs this hospital labels."""
        return masked_sigmoid_loss(logits, batch.label, batch.labelled, self.params.bce_weight)

    def extra_loss(self, model: nn.Module, batch: Batch, logits: Tensor) -> Tensor | None:
        """alpha * global-model KD on unlabelled (not sampled) organs + beta * KD from sampled teachers."""
        p = self.params
        unlabelled = [k for k, own in enumerate(self.context.labelled) if not own]
        sampled: list[int] = []
        teachers = self.context.extras.get("teachers", {})  # organ -> (frozen teacher, its head)
        if p.teacher_kd_weight > 0 and teachers and unlabelled:
            candidates = [k for k in unlabelled if k in teachers]
            order = torch.randperm(len(candidates)).tolist()  # seeded per (seed, round, hospital)
            sampled = [candidates[i] for i in order[: p.teachers_per_step]]
        loss = logits.new_zeros(())
        if sampled:
            teacher_terms = []
            for organ in sampled:
                teacher, head = teachers[organ]
                with torch.no_grad():
                    target = teacher(batch.image)[:, head]
                teacher_terms.append(soft_target_bce(logits[:, organ], target, p.temperature))
            loss = loss + p.teacher_kd_weight * torch.stack(teacher_terms).mean()
        if self.global_model is not None:
            own = [k for k, is_own in enumerate(self.context.labelled) if is_own]
            distilled = [k for k in unlabelled if k not in sampled]
            if p.global_kd_on_own_organs:
                distilled += own
            if distilled:
                with torch.no_grad():
                    target = self.global_model(batch.image)[:, distilled]
                loss = loss + p.global_kd_weight * soft_target_bce(logits[:, distilled], target, p.temperature)
        return loss


class TeacherHooks(ClientHooks):
    """Supervised loss of a teacher whose heads are only the site's own organs."""

    def __init__(self, own_organs: list[int], context: ClientContext) -> None:
        super().__init__(None, context)
        self.own_organs = torch.tensor(own_organs)

    def supervised_loss(self, logits: Tensor, batch: Batch) -> Tensor:
        """Masked Dice + BCE with the study label map narrowed to this teacher's heads."""
        label = batch.label
        narrowed = torch.zeros_like(label)  # study label values -> this teacher's head numbering
        for head, organ in enumerate(self.own_organs.tolist()):
            narrowed[label == organ + 1] = head + 1
        labelled = torch.ones(label.shape[0], len(self.own_organs), dtype=torch.bool, device=label.device)
        return masked_sigmoid_loss(logits, narrowed, labelled)


class FedKD(Strategy):
    """Kim et al., "Federated learning with knowledge distillation for multi-organ segmentation with
    partially labeled datasets", Medical Image Analysis 95 (2024) 103156.

    Preparation: organ k's teacher is trained by the hospital with the most cases among those
    labelling k (lowest index on ties), one head per organ that hospital labels, so a study with
    hundreds of hospitals pre-trains at most one model per organ; each is checkpointed as it
    finishes. The teachers are then broadcast once (each hospital decodes them once per actor) and
    counted once: uploaded by their hospital and downloaded by every hospital lacking one of their
    organs. Server: the unweighted mean over all parameters (backbone, shared embedding, every head),
    as in the authors' code; `method.server` adds a FedOpt server optimiser like for any method.
    """

    client_hooks_class = FedKDHooks

    def __init__(self, params: FedKDParams, server=None) -> None:
        super().__init__(params, server)
        self.trained: dict[str, bytes] = {}  # "teacher/<hospital id>" -> encoded teacher weights
        self.teachers: dict[int, tuple[str, int, int, bytes]] = {}  # organ -> (hospital id, head, heads, weights)

    def client_weight(self, num_examples: int) -> float:
        """Unweighted mean, as in the authors' FedAvg."""
        return 1.0

    def setup(self, organs, hospitals, model) -> None:
        super().setup(organs, hospitals, model)
        self.owners = organ_owners(self.organs, self.hospitals) if self.hospitals else {}

    def preparation(self) -> list[PrepareJob]:
        """One teacher per owning hospital not trained yet; none when teacher KD is switched off."""
        if self.params.teacher_kd_weight == 0:
            return []
        owners = {h.hospital_id: h for h in self.owners.values()}
        jobs = [
            PrepareJob(f"teacher/{hid}", h, tuple(k for k, organ in enumerate(self.organs) if organ in h.organs))
            for hid, h in sorted(owners.items())
            if f"teacher/{hid}" not in self.trained
        ]
        if not jobs:
            self._share()
        return jobs

    def prepare(self, job: PrepareJob, data: list[dict], runtime: ClientRuntime, seed: int) -> bytes:
        """Train the hospital's teacher alone with plain supervised hooks: one head per organ it labels."""
        own = list(job.spec)
        teacher = runtime.build_model(len(own))
        hooks = TeacherHooks(own, ClientContext(job.hospital.hospital_id, 0, tuple(True for _ in own), "sigmoid"))
        runtime.train_model(teacher, hooks, data, self.params.teacher_steps, seed)
        return encode_state(hooks.payload(teacher))

    def prepared(self, job: PrepareJob, result: bytes) -> None:
        self.trained[job.key] = result
        if len(self.trained) == len({h.hospital_id for h in self.owners.values()}):
            self._share()

    def _share(self) -> None:
        """organ -> (teacher hospital, head of that organ, the teacher's head count, weights)."""
        teachers = {}
        for k, hospital in self.owners.items():
            own = [o for o in self.organs if o in hospital.organs]
            payload = self.trained[f"teacher/{hospital.hospital_id}"]
            teachers[k] = (hospital.hospital_id, own.index(self.organs[k]), len(own), payload)
        self.teachers = teachers

    def preparation_bytes(self) -> int:
        """Each teacher uploaded once, and downloaded by every hospital that lacks one of its organs."""
        if not self.teachers:
            return 0
        payloads = {hid: payload for hid, _, _, payload in self.teachers.values()}
        downloaded = 0
        for hospital in self.hospitals:
            needed = {self.owners[k].hospital_id for k, o in enumerate(self.organs) if o not in hospital.organs}
            downloaded += sum(len(payloads[t]) for t in needed - {hospital.hospital_id})
        return sum(len(p) for p in payloads.values()) + downloaded

    def pretrained_models(self) -> dict[str, PretrainedModel]:
        """Each trained teacher: one head per organ its hospital labels, used for the organs it owns."""
        models = {}
        for key, payload in sorted(self.trained.items()):
            hospital_id = key.removeprefix("teacher/")
            hospital = next(h for h in self.hospitals if h.hospital_id == hospital_id)
            heads = tuple(k for k, organ in enumerate(self.organs) if organ in hospital.organs)
            used_for = tuple(k for k, owner in sorted(self.owners.items()) if owner.hospital_id == hospital_id)
            models[key] = PretrainedModel(heads, used_for, decode_state(payload))
        return models

    def broadcast(self, round_index: int) -> dict:
        """The teachers, the same object every round (so put in Ray's object store once)."""
        return {"teachers": self.teachers} if self.teachers else {}

    def open_broadcast(self, extras: dict, runtime: ClientRuntime) -> dict:
        """Frozen teacher modules, decoded once per actor (teachers never change after preparation)."""
        teachers = {}
        for organ, (hospital_id, head, n_heads, payload) in extras.get("teachers", {}).items():
            key = f"fedkd/teacher/{hospital_id}"
            if key not in runtime.cache:
                teacher = runtime.build_model(n_heads)
                teacher.load_state_dict(state_to_torch(decode_state(payload)))
                runtime.cache[key] = teacher.eval().requires_grad_(False)
            teachers[organ] = (runtime.cache[key], head)
        return {"teachers": teachers}

    def state_dict(self) -> dict[str, bytes]:
        return {**super().state_dict(), **self.trained}

    def load_state_dict(self, state: dict[str, bytes]) -> None:
        super().load_state_dict(state)
        self.trained = {k: v for k, v in state.items() if k.startswith("teacher/")}
