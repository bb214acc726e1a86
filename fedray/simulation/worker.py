"""A hospital actor: runs any hospital's task on request, reading its patches from the memory-mapped case store."""

from __future__ import annotations

from fedray.simulation.lean_imports import import_monai

import_monai()  # first, before anything imports MONAI (see lean_imports)

import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import ray
import torch

from fedray.config import StudyConfig
from fedray.data.case_store import CaseArrays, Recipe, StoredCase, open_case, store_root
from fedray.data.datasets import ensure_stored, load_cases
from fedray.data.federation import Hospital
from fedray.data.patches import PatchSampler, first_batches
from fedray.errors import FedrayError
from fedray.messages import (
    ClientResult,
    EvalReport,
    EvalTask,
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
from fedray.tracking.provenance import compute_platform
from fedray.training.hooks import ClientContext, ClientHooks
from fedray.training.evaluate import score_cases
from fedray.training.local import make_optimizer, reset_optimizer, train_locally

log = logging.getLogger(__name__)

STEP_REPORT_S = 0.5  # a hospital still training tells the driver its steps at most this often


class StepReporter:
    """Tells the watching driver (`HospitalWorker.report_steps_to`) how far one hospital's local training is.

    Nothing is sent in a task's first STEP_REPORT_S seconds (most hospitals of a small study finish
    before), then at most once per STEP_REPORT_S, and a last time at the end if anything was sent, so
    the driver forgets the hospital. Fire-and-forget calls: training never waits on the driver.
    """

    def __init__(self, sink: Any, round_index: int, hospital_id: str, steps: int) -> None:
        self.sink, self.round, self.hospital_id, self.steps = sink, round_index, hospital_id, steps
        self.next_at = time.monotonic() + STEP_REPORT_S
        self.sent = False

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if now >= self.next_at or (done == self.steps and self.sent):
            self.sink.hospital_steps.remote(self.round, self.hospital_id, done, self.steps)
            self.next_at, self.sent = now + STEP_REPORT_S, True


def task_seed(seed: int, round_index: int, hospital_index: int) -> int:
    """One RNG seed per (study seed, round, hospital), independent of which actor runs the task."""
    return int(np.random.SeedSequence([seed, round_index, hospital_index]).generate_state(1)[0])


class HospitalWorker:
    """Runs hospitals' tasks on request: one model, the method's decoded broadcast and this round's partial sum.

    A task names its hospital's cases in the case store (fedray.data.case_store); the actor maps
    them read-only for the task and copies out only the patches it draws, so any actor can train
    any hospital and holds no data between tasks: the driver hands each idle actor the round's next
    hospitals (a few per call, `run_batch`), so a round is not held up by an unlucky draw of
    hospitals on one actor.
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
        # (version: the round after which they are the global weights, numpy, torch on device, bytes down)
        self._global: tuple[int, dict, dict, int] | None = None
        self._judged: tuple[int, torch.nn.Module] | None = None  # (round, the method's judged model on device)
        self._eval_cases: dict = {}  # site case -> its loaded volume, kept for every later evaluation
        self._extras: tuple[int, dict, int] | None = None  # (round, opened broadcast, its bytes per hospital)
        self._sampler = PatchSampler(
            config.data.patch_size,
            config.data.foreground_ratio,
            config.train.batch_size,
            augment=config.data.preprocess.augment,
        )
        self._sums: dict[int, RoundLedger] = {}  # round -> partial sum of the updates trained here
        self._runtime = HospitalRuntime(config, self.device, self._sampler)
        self._recipe = Recipe.of(config.data)  # how this study's cases are preprocessed
        self._steps_to: Any = None  # the driver actor while it is watched (`report_steps_to`)
        train = config.train
        # One optimiser over self.model for every task, emptied per task (reset_optimizer).
        self._optimizer = make_optimizer(self.model, train.optimizer, train.lr, train.momentum, train.weight_decay,
                                         config.resources.fused_optimizer)
        _warm_up(self.model, self._optimizer, self.device, config.data.patch_size, train.batch_size)
        self._weights_into = WeightCopier(self.model)  # each task's global weights into self.model

    def pid(self) -> int:
        """Process id of this actor (fault-injection tests kill it)."""
        return os.getpid()

    def machine(self) -> dict:
        """Where this actor runs: its Ray node (placement tests check the spread) and its compute platform."""
        return {"node_id": ray.get_runtime_context().get_node_id(), "platform": compute_platform(self.device)}

    def ready(self) -> bool:
        """True once the actor is constructed (its process started, libraries imported, warmed up)."""
        return True

    def run(self, task: TrainTask | PrepareTask | EvalTask) -> TaskReport | EvalReport:
        """Run one task: a round's local training, a preparation job of the method, or an evaluation."""
        if isinstance(task, PrepareTask):
            return self._prepare(task)
        if isinstance(task, EvalTask):
            return self._evaluate(task)
        return self._train(task)

    def run_batch(self, tasks: Sequence[TrainTask]) -> list[TaskReport]:
        """Several hospitals' local training in one call (Ray costs milliseconds of CPU per call), in order:
        a report each, as `run` would give one by one.

        A hospital whose training raised is reported failed (the driver retries it alone) and the
        rest of the batch still trains; a configuration error propagates.
        """
        reports = []
        for task in tasks:
            try:
                reports.append(self._train(task))
            except FedrayError:
                raise
            except Exception as error:  # noqa: BLE001 - outside the local training itself (its weights, its broadcast)
                log.warning("training of %s failed in round %d: %r", task.hospital.hospital_id, task.round, error)
                reports.append(TaskReport(task.hospital.hospital_id, failed=repr(error)))
        return reports

    def report_steps_to(self, driver: Any) -> None:
        """From now on, tell `driver` (its `hospital_steps`) the local steps of long trainings.

        Sent once per actor rather than with each task: deserialising an actor handle in every task
        would cost about as much as a report itself.
        """
        self._steps_to = driver

    def flush(self, round_index: int) -> RoundPart:
        """This actor's partial sum and accounts for the round (then forgotten here)."""
        ledger = self._sums.pop(round_index, None)
        self._sums = {r: s for r, s in self._sums.items() if r > round_index}  # drop abandoned rounds
        if ledger is None:
            return RoundPart(round=round_index, account=RoundAccount())
        return ledger.part(round_index)

    # -- tasks ------------------------------------------------------------------------------------
    def _open(self, cases: Sequence[StoredCase]) -> list[CaseArrays]:
        """A task's cases, memory-mapped; one missing from the store (no preprocessing step ran) is written first."""
        # open_case checks the store version and, for a missing case only, calls ensure_stored (which checks it too).
        return [open_case(ref, self._store) for ref in cases]

    def _store(self, ref: StoredCase) -> StoredCase:
        return ensure_stored(ref, self._recipe)

    def _prepare(self, task: PrepareTask) -> TaskReport:
        hospital = task.job.hospital
        seed = task_seed(self.config.seed, 0, hospital.index)  # round 0 seeds the preparation
        seed_torch(seed, self.device)
        data = self._open(task.data)
        # round 0 is the preparation; the job's key names it on the driver's progress (several jobs may share a hospital)
        self._runtime.steps_to = (self._steps_to, task.job.key) if self._steps_to is not None else None
        try:
            return TaskReport(hospital.hospital_id, prepared=self.strategy.prepare(task.job, data, self._runtime, seed))
        finally:
            self._runtime.steps_to = None

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
        self._global_weights(round_index - 1, task.global_payload)
        if self._extras is None or self._extras[0] != round_index:
            raw = _resolve(task.extras) if task.extras is not None else {}
            self._extras = (round_index, strategy.open_broadcast(raw, self._runtime), strategy.broadcast_bytes(raw))
        _, global_state, global_weights, bytes_down = self._global
        _, extras, extras_bytes = self._extras
        try:
            update, loss, seconds, state = self._train_hospital(
                hospital, self._open(task.data), round_index, global_weights, extras, task.client_state, self._steps_to
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

    def _global_weights(self, version: int, payload: Any) -> None:
        """Hold the global weights after round `version`: fetched and decoded once per version and actor
        (an evaluation after round r and round r + 1's training share them)."""
        if self._global is None or self._global[0] != version:
            decoded = decode_state(_resolve(payload))
            weights = {k: v.to(self.device) for k, v in state_to_torch(decoded).items()}
            self._global = (version, decoded, weights, self.strategy.download_bytes(decoded))

    def _evaluate(self, task: EvalTask) -> EvalReport:
        """Predict and score `task.cases` with the evaluated model (see training.evaluate.score_cases)."""
        cfg = self.config
        if task.judged is not None:
            if self._judged is None or self._judged[0] != task.round:
                self._judged = (task.round, _resolve(task.judged).to(self.device))
            model = self._judged[1]
        else:
            self._global_weights(task.round, task.weights)
            self.model.load_state_dict(self._global[2])  # the next training task loads its own weights
            model = self.model
        missing = [case for case in task.cases if case not in self._eval_cases]
        if missing:
            loaded = load_cases(missing, cfg.data.organs, cfg.data.hu_window, cfg.data.preprocess, store_root(cfg.data))
            self._eval_cases.update(zip(missing, loaded))
        cases = [self._eval_cases[case] for case in task.cases]
        scores = score_cases(model, cases, cfg.model.output, cfg.eval, len(cfg.data.organs), self.device)
        return EvalReport(task.key, tuple(scores))

    def _train_hospital(
        self,
        hospital: Hospital,
        data: list[CaseArrays],
        round_index: int,
        global_weights: dict[str, torch.Tensor],
        extras: dict,
        client_state: bytes | None,
        steps_to: Any = None,
    ) -> tuple[dict, float, float, dict | None]:
        """Local training of one hospital: (update, mean loss, seconds of the bare update, state to keep)."""
        cfg = self.config
        self._weights_into(global_weights)
        seed = task_seed(cfg.seed, round_index, hospital.index)
        seed_torch(seed, self.device)
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
        steps = cfg.train.local_steps
        reporter = StepReporter(steps_to, round_index, hospital.hospital_id, steps) if steps_to is not None else None
        with first_batches(self._sampler.batches(data, seed), steps, self._runtime.prefetch) as batches:
            local = train_locally(self.model, batches, steps, optimizer, hooks, self.device, on_step=reporter)
        seconds = time.perf_counter() - start
        # The default payload (the model's weights) from the copier's tensors; a method's own as it says.
        copied = self._weights_into.state_arrays() if type(hooks).payload is ClientHooks.payload else None
        update = copied if copied is not None else hooks.payload(self.model)
        return update, local.mean_loss, seconds, hooks.client_state(self.model)


class HospitalRuntime:
    """What a hospital actor lends a method's preparation phase and broadcast decoding (ClientRuntime)."""

    def __init__(self, config: StudyConfig, device: torch.device, sampler: PatchSampler) -> None:
        self.config = config
        self.device = device
        self.sampler = sampler
        self.prefetch = device.type != "cpu"  # batches prepared in a thread while the accelerator steps (first_batches)
        self.cache: dict[str, Any] = {}  # what the method decodes once per actor
        self.steps_to: tuple[Any, str] | None = None  # (the watching driver, the job's name) during a watched job

    def build_model(self, n_organs: int) -> torch.nn.Module:
        """The study's network with `n_organs` outputs, on this actor's device."""
        return build_model(self.config.model, n_organs).to(self.device)

    def train_model(
        self, model: torch.nn.Module, hooks: ClientHooks, data: list[CaseArrays], steps: int, seed: int
    ) -> float:
        """`steps` steps of the shared loop with the study's optimiser at its base rate; the mean loss.

        The optimiser is built here, not reused: `model` is a network the method builds, not the actor's."""
        cfg = self.config.train
        optimizer = make_optimizer(model, cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay,
                                   self.config.resources.fused_optimizer)
        reporter = StepReporter(self.steps_to[0], 0, self.steps_to[1], steps) if self.steps_to is not None else None
        with first_batches(self.sampler.batches(data, seed), steps, self.prefetch) as batches:
            return train_locally(model, batches, steps, optimizer, hooks, self.device, on_step=reporter).mean_loss


def seed_torch(seed: int, device: torch.device) -> None:
    """torch.manual_seed(seed) for a task on `device`: on a CPU actor that has not started CUDA, only the
    CPU generator, which is all such a task draws from.

    torch.manual_seed also seeds CUDA, XPU and MTIA; where they are not initialised it queues each
    seeding with a formatted stack trace (its cost grows with the stack: about 0.15 ms per call in a
    plain process, more under Ray's frames), on every task of a CPU actor. Bit-identical on the CPU.
    """
    if device.type == "cpu" and not torch.cuda.is_initialized():
        torch.default_generator.manual_seed(seed)
    else:
        torch.manual_seed(seed)


class WeightCopier:
    """`model.load_state_dict(weights)` as one in-place copy per tensor: the same copies (parameters and
    buffers under no_grad), without load_state_dict's walk of the model's modules (about 0.5 ms of CPU
    per call on the scale workload's U-Net, against 45 us for the copies).

    The model's tensors are taken once (the actor's model keeps its modules). Whenever the weights do
    not name exactly the model's tensors with their shapes, or a module of the model has its own
    loading (hooks, or a `_load_from_state_dict` beyond torch's norm layers, which only act on keys
    that are missing or extra), it is load_state_dict itself, with its checks and messages.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        plain = all(
            not module._load_state_dict_pre_hooks
            and not module._load_state_dict_post_hooks
            and type(module)._load_from_state_dict in _PLAIN_LOADS
            for module in model.modules()
        )
        self.tensors = dict(model.state_dict(keep_vars=True)) if plain else None
        # ... and for ClientHooks.payload's state_dict (below) when no module saves its own way.
        self.saves_plainly = self.tensors is not None and all(
            not module._state_dict_hooks
            and not module._state_dict_pre_hooks
            and type(module)._save_to_state_dict is torch.nn.Module._save_to_state_dict
            for module in model.modules()
        )

    def __call__(self, weights: dict[str, torch.Tensor]) -> None:
        tensors = self.tensors
        if tensors is None or weights.keys() != tensors.keys() or any(
            tensors[k].shape != v.shape for k, v in weights.items()
        ):
            self.model.load_state_dict(weights)
            return
        with torch.no_grad():
            for key, value in weights.items():
                tensors[key].copy_(value)

    def state_arrays(self) -> dict[str, np.ndarray] | None:
        """What `ClientHooks.payload` returns for the model ({key: state_dict value as numpy}, the same
        arrays) from the tensors taken once, without state_dict's module walk (0.2 ms a task); None
        where that is not known to be the same (see `saves_plainly`)."""
        if not self.saves_plainly:
            return None
        return {key: tensor.detach().cpu().numpy() for key, tensor in self.tensors.items()}


# Loading of torch's own modules that copies exactly what load_state_dict is given when its keys match
# (the norm layers' only handle running statistics missing from, or extra in, older checkpoints).
_PLAIN_LOADS = frozenset(
    getattr(cls, "_load_from_state_dict")
    for cls in (
        torch.nn.Module,
        getattr(torch.nn.modules.batchnorm, "_NormBase", torch.nn.Module),
        getattr(torch.nn.modules.instancenorm, "_InstanceNorm", torch.nn.Module),
    )
)


def _finite(state: dict) -> bool:
    """True when every floating array of a weight dict is finite."""
    return all(np.isfinite(v).all() for v in state.values() if np.issubdtype(np.asarray(v).dtype, np.floating))


def _resolve(value: Any) -> Any:
    """A task field's value: fetched from Ray's object store when it is a reference (as the driver
    sends them), as it is otherwise (tests and in-process use)."""
    return ray.get(value) if isinstance(value, ray.ObjectRef) else value


def _warm_up(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device,
    patch_size: tuple[int, int, int], batch_size: int,
) -> None:
    """One throwaway forward/backward/step at construction, so no round pays for lazy initialisation
    (kernel selection, allocator growth, the optimiser's first-step imports). With the tasks' batch
    size and optimiser: a batch of 1 and SGD left that to the first task (1.5-1.7 times a later task's
    CPU in-process on the scale workload; 1.2 with this warm-up, the rest being the round's weights decoded). The weights and the optimiser come out as they went in."""
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    rates = [group["lr"] for group in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["lr"] = 0.0
    model(torch.zeros(batch_size, 1, *patch_size, device=device)).sum().backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    optimizer.state.clear()
    for group, rate in zip(optimizer.param_groups, rates):
        group["lr"] = rate
    model.load_state_dict(weights)
