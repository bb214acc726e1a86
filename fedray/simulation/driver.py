"""The driver: the only round loop. Prepares the method, then each round samples, broadcasts, trains, aggregates, evaluates."""

from __future__ import annotations

from fedray.simulation.lean_imports import import_monai

import_monai()  # first, before anything imports MONAI (see lean_imports)

import math
import platform
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import monai
import numpy as np
import ray
import torch

import fedray
from fedray.config import SiteConfig, StudyConfig, config_digest, flatten
from fedray.configtypes import to_data
from fedray.data.federation import Hospital
from fedray.data.sites import read_site_cases
from fedray.messages import EvalTask, Metric, Progress, State, encode_state
from fedray.metrics.rows import evaluation_fields, hospital_rows, local_validation_fields, round_row
from fedray.metrics.segmentation import dice_from_counts, mean_dice
from fedray.models.factory import build_model, count_parameters
from fedray.simulation.ledger import RoundLedger
from fedray.simulation.placement import HospitalActors, release_placement
from fedray.simulation.scheduler import RoundInFlight, RoundScheduler
from fedray.strategies import build_strategy
from fedray.tracking.callbacks import Callback, CallbackList, RunContext
from fedray.tracking.checkpoint import Checkpoint, CheckpointCallback, checkpoint_path, load_checkpoint
from fedray.tracking.client_store import ClientStateStore, DecodedClientStates
from fedray.tracking.mlflow import MlflowCallback
from fedray.tracking.model_logging import ModelLoggingCallback
from fedray.tracking.provenance import git_commit
from fedray.tracking.run_files import RunFilesCallback
from fedray.tracking.plateau import plateau_fields
from fedray.training.evaluate import Evaluation, combine


class StudyStopped(Exception):
    """The user asked the study to stop (Ctrl-C); it stopped after a checkpoint."""


@dataclass
class StudyState:
    """The driver's state between rounds: exactly what a checkpoint holds (the method's own is opaque)."""

    round: int
    global_state: State
    untrained_dice: float
    last_eval: Evaluation
    bytes_total: int = 0
    wall_s: float = 0.0
    # the compute platforms of each session's hospital actors, from the round it began at
    platforms: list[dict] = field(default_factory=list)

    def note_platforms(self, placed: list[dict]) -> None:
        """Record this session's actors' compute platforms, unless the session before ran on the same."""
        platforms = sorted({tuple(sorted(p["platform"].items())) for p in placed})
        platforms = [dict(p) for p in platforms]
        if not self.platforms or self.platforms[-1]["platforms"] != platforms:
            self.platforms.append({"from_round": self.round + 1, "platforms": platforms})

    def to_checkpoint(self, run_id: str | None, rows: list[dict], method_state: dict[str, bytes]) -> Checkpoint:
        meta = {
            "run_id": run_id,
            "rows": rows,
            "untrained_dice": self.untrained_dice,
            "last_counts": self.last_eval.counts.tolist(),
            "last_seconds": self.last_eval.seconds_per_volume,
            "last_hd95_mm": [None if math.isnan(h) else h for h in self.last_eval.hd95_mm],
            "last_dice_per_volume": [None if math.isnan(d) else d for d in self.last_eval.dice_per_volume],
            "last_hd95_missed": [int(m) for m in self.last_eval.hd95_missed],
            "bytes_total": self.bytes_total,
            "wall_s": self.wall_s,
            "platforms": self.platforms,
        }
        return Checkpoint(self.round, self.global_state, meta, {f"method/{k}": v for k, v in method_state.items()})

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint) -> tuple[StudyState, dict[str, bytes]]:
        """The state and the method's state dict."""
        meta = checkpoint.meta
        state = cls(
            round=checkpoint.round,
            global_state=checkpoint.global_state,
            untrained_dice=meta["untrained_dice"],
            last_eval=Evaluation(
                np.array(meta["last_counts"], dtype=np.int64),
                meta["last_seconds"],
                np.array([math.nan if h is None else h for h in meta["last_hd95_mm"]], dtype=np.float64),
                # absent from checkpoints written before per-volume Dice: NaN (not measured) and no misses
                dice_per_volume=(
                    np.array([math.nan if d is None else d for d in meta["last_dice_per_volume"]], dtype=np.float64)
                    if "last_dice_per_volume" in meta else None
                ),
                hd95_missed=np.array(meta["last_hd95_missed"], dtype=np.int64) if "last_hd95_missed" in meta else None,
            ),
            bytes_total=meta["bytes_total"],
            wall_s=meta["wall_s"],
            # checkpoints written before platforms were recorded: the rounds so far ran on one not known
            platforms=meta.get("platforms", [{"from_round": 1, "platforms": None}] if checkpoint.round else []),
        )
        method = {k.removeprefix("method/"): v for k, v in checkpoint.blobs.items() if k.startswith("method/")}
        return state, method


class ProgressBoard(Callback):
    """What the launcher polls (`Driver.progress`): phase, round, hospitals done and the steps of those
    still training, loss, Dice, ETA."""

    def __init__(self, rounds: int) -> None:
        self._progress = Progress(rounds=rounds)
        self._lock = threading.Lock()
        self._steps: dict[str, tuple[int, int]] = {}  # this round's hospitals still training: (done, steps)
        self._finished: set[str] = set()  # this round's hospitals that reported their last step

    def snapshot(self) -> Progress:
        with self._lock:
            running = tuple((h, done, steps) for h, (done, steps) in sorted(self._steps.items()))
            return Progress(**{**vars(self._progress), "running": running})

    def update(self, **values: object) -> None:
        with self._lock:
            if values.get("round", self._progress.round) != self._progress.round:
                self._steps.clear()
                self._finished.clear()
            for key, value in values.items():
                setattr(self._progress, key, value)

    def hospital_steps(self, round_index: int, hospital_id: str, done: int, steps: int) -> None:
        """A hospital's local steps so far; one that finished (or reports from another round) is dropped.

        Reports may arrive out of order (the driver's actor is threaded): one after the last is ignored.
        """
        with self._lock:
            if round_index != self._progress.round or hospital_id in self._finished:
                return
            if done >= steps:
                self._finished.add(hospital_id)
                self._steps.pop(hospital_id, None)
            else:
                self._steps[hospital_id] = (done, steps)

    def on_run_start(self, run: RunContext) -> None:
        self.update(run_id=run.run_id)

    def on_round_end(self, run: RunContext, row: dict) -> None:
        done, rounds, wall_s = row["round"], run.config.rounds, run.wall_s
        dice = row[Metric.DICE_MEAN.value]
        if not math.isnan(dice):
            self.update(dice_mean=float(dice))
        self.update(phase="training", elapsed_s=wall_s, eta_s=wall_s / done * (rounds - done))


class Driver:
    """Runs one study, in a Ray actor (`launch.DriverActor`) or in-process in tests."""

    def __init__(
        self,
        config: StudyConfig,
        hospitals: list[Hospital],
        test_dir: Path,
        resume: bool = False,
        skipped: tuple[dict, ...] = (),
        callbacks: tuple[Callback, ...] = (),
    ) -> None:
        self.config = config
        self.hospitals = hospitals
        self.test_dir = test_dir
        self.resume = resume
        self.skipped = list(skipped)
        self.user_callbacks = list(callbacks)
        self.organs = list(config.data.organs)
        self.strategy = build_strategy(config.method)
        self.client_store = ClientStateStore(config.run_dir / "client_state")
        self.board = ProgressBoard(config.rounds)
        self._stop = threading.Event()
        self.first_round_at: float | None = None
        self.rounds_wall_s = 0.0  # this session: first round's dispatch to last new global weights, without evaluation
        self._broadcast: tuple[dict, ray.ObjectRef] | None = None
        self._weights: tuple[int, ray.ObjectRef] | None = None  # (after which round, encoded global weights)

    # -- called concurrently by the launcher (threaded actor) -------------------------------------
    def progress(self) -> Progress:
        """A snapshot of the study's progress. From the first call on, hospitals report their steps
        (the launcher calls it only while it shows progress, so unwatched studies send nothing)."""
        scheduler = getattr(self, "scheduler", None)  # None until run() starts
        if scheduler is not None and scheduler.steps_to is None and ray.get_runtime_context().get_actor_id():
            scheduler.steps_to = ray.get_runtime_context().current_actor  # this driver's actor (launch.DriverActor)
        return self.board.snapshot()

    def hospital_steps(self, round_index: int, hospital_id: str, done: int, steps: int) -> None:
        """A hospital's local training progress (sent by its actor while the study is watched)."""
        self.board.hospital_steps(round_index, hospital_id, done, steps)

    def stop(self) -> None:
        """Ask the study to stop after the current round's checkpoint."""
        self._stop.set()

    # -- the study --------------------------------------------------------------------------------
    def run(self, started: HospitalActors) -> dict:
        """Run (or resume) every round and return the summary (also written to summary.json).

        `started`: the hospital actors, started by the launcher so that they start while this actor does.
        """
        try:
            self.scheduler = RoundScheduler(self.config, started, self.client_store)
            return self._run()
        finally:
            release_placement(self.config)  # the study's actors are done with their bundles

    def _run(self) -> dict:
        cfg = self.config
        path = checkpoint_path(cfg.run_dir)
        resumed = load_checkpoint(path) if self.resume and path.exists() else None
        run = RunContext(cfg, self.hospitals, self.test_dir, self._tags(), self.skipped, resumed)
        callbacks = CallbackList(
            [RunFilesCallback(), ModelLoggingCallback(), MlflowCallback(), CheckpointCallback(self.client_store.prune),
             self.board, *self.user_callbacks]
        )
        self.board.update(phase="loading data")
        try:
            summary = self._study(run, callbacks)
        except StudyStopped:
            callbacks.on_run_end(run, "KILLED", None)
            raise
        except BaseException:
            callbacks.on_run_end(run, "FAILED", None)
            raise
        callbacks.on_run_end(run, "FINISHED", summary)
        self.board.update(phase="done", eta_s=0.0)
        return summary

    def _study(self, run: RunContext, callbacks: Callback) -> dict:
        cfg, strategy = self.config, self.strategy
        session_start = time.perf_counter()
        torch.manual_seed(cfg.seed)  # same initial weights for every method run with this seed
        model = build_model(cfg.model, len(self.organs))
        strategy.setup(self.organs, self.hospitals, model)
        client_states = DecodedClientStates(self.client_store)
        test_cases = read_site_cases(SiteConfig(path=str(self.test_dir)), require_files=True).cases  # actors load them
        if run.resumed is not None:
            state, method_state = StudyState.from_checkpoint(run.resumed)
            run.run_id = run.resumed.meta["run_id"]
            run.rows = list(run.resumed.meta["rows"])
            self.client_store.rollback(state.round)  # states written after the checkpoint are redone
            strategy.load_state_dict(method_state)
        else:
            untrained, _ = self._evaluate(model, 0, model.state_dict(), test_cases, client_states)
            state = StudyState(
                round=0,
                # copies: the model's tensors change in place later, the global state must not
                global_state={k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()},
                untrained_dice=mean_dice(dice_from_counts(untrained.counts)),
                last_eval=untrained,
            )
        wall_before = state.wall_s

        def snapshot() -> Checkpoint:
            if state.round == 0:  # before round 1 the time spent so far is the preparation's
                state.wall_s = wall_before + time.perf_counter() - session_start
            return state.to_checkpoint(run.run_id, run.rows, strategy.state_dict())

        run.snapshot = snapshot
        callbacks.on_run_start(run)
        self.scheduler.await_actors()
        # a study stopped at its plateau but killed before summary.json has no round left to train
        first = cfg.rounds + 1 if run.rows and self._plateaued(run.rows) else state.round + 1
        if first <= cfg.rounds:  # a session that trains no round ran on no platform worth recording
            state.note_platforms(self.scheduler.placed)
        jobs = strategy.preparation()
        if jobs:
            self.board.update(phase="preparing", clients_done=0, clients=len(jobs))  # round 0: the jobs' steps show
            finished = [0]

            def prepared(job, result: bytes) -> None:
                strategy.prepared(job, result)
                callbacks.on_prepared(run)
                finished[0] += 1
                self.board.update(clients_done=finished[0])

            self.scheduler.prepare(jobs, prepared)
        if state.round == 0:
            state.bytes_total = strategy.preparation_bytes()

        rounds_began = time.perf_counter()
        evaluating_s = 0.0  # evaluation time since rounds_began
        next_round: RoundInFlight | None = None  # started before the previous round was recorded
        for round_index in range(first, cfg.rounds + 1):
            this_round = next_round or self._start_round(round_index, state.global_state)
            ledger, chosen = this_round.ledger, this_round.chosen
            faults = this_round.finish()
            state.global_state = ledger.new_global_state()
            train_s = time.perf_counter() - this_round.started
            self.rounds_wall_s = time.perf_counter() - rounds_began - evaluating_s
            state.bytes_total += ledger.account.bytes_down + ledger.account.bytes_up

            evaluated = round_index % cfg.eval.every == 0 or round_index == cfg.rounds
            stopping = self._stop.is_set()
            # The next round needs only the new global weights, so it trains while this one is recorded
            # (run files, MLflow), unless this round is evaluated (the evaluation needs the actors, and
            # may meet the plateau rule) or the user asked to stop.
            next_round = None if evaluated or stopping else self._start_round(round_index + 1, state.global_state)
            eval_s, local_scores = math.nan, None
            if evaluated:
                self.board.update(phase="evaluating")
                eval_start = time.perf_counter()
                model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.global_state.items()})
                state.last_eval, local_scores = self._evaluate(
                    model, round_index, state.global_state, test_cases, client_states
                )
                eval_s = time.perf_counter() - eval_start
                evaluating_s += eval_s
                faults[Metric.RETRIES.value] += self.scheduler.eval_retries  # evaluation tasks count too
            row = round_row(
                round_index, self.organs, state.last_eval, evaluated, ledger.account, state.bytes_total,
                {"round": time.perf_counter() - this_round.started, "train": train_s, "eval": eval_s},
                ledger.train_loss, faults, len(chosen),
            ) | local_validation_fields(self.organs, self.hospitals, local_scores)
            run.case_rows = [
                {"round": round_index, **case, "organ": self.organs[case["organ"] - 1]} for case in state.last_eval.cases
            ] if evaluated else []
            run.hospital_rows = hospital_rows(
                round_index, [h.hospital_id for h in chosen], ledger.account, self.scheduler.outcomes,
                cfg.train.local_steps,
            )
            state.round = round_index
            state.wall_s = run.wall_s = wall_before + time.perf_counter() - session_start
            run.rows.append(row)
            run.stopping = stopping
            run.last_round = round_index == cfg.rounds or (evaluated and self._plateaued(run.rows))
            callbacks.on_round_end(run, row)  # run files, MLflow, the checkpoint when due, progress
            if run.last_round:
                break
            if run.stopping:
                raise StudyStopped()
        state.wall_s = wall_before + time.perf_counter() - session_start
        return self._summary(state, model, run)

    def _start_round(self, round_index: int, global_state: State) -> RoundInFlight:
        """Sample the round's hospitals, broadcast the global weights once and queue the first calls."""
        chosen = self._sample(round_index)
        self.board.update(phase="training", round=round_index, clients_done=0, clients=len(chosen))
        payload_ref = self._weights_ref(round_index - 1, global_state)  # one broadcast per round
        if self.first_round_at is None:
            self.first_round_at = time.time()
        return self.scheduler.start_round(
            round_index, chosen, payload_ref, self._broadcast_ref(round_index),
            RoundLedger(self.strategy, global_state), self.strategy.partial_aggregation,
            on_progress=lambda done, ledger: self.board.update(clients_done=done, train_loss=ledger.train_loss),
        )

    def _plateaued(self, rows: list[dict]) -> bool:
        """eval.stop_at_plateau is on and the evaluated rounds so far meet the plateau rule."""
        ev = self.config.eval
        return ev.stop_at_plateau and plateau_fields(
            rows, ev.plateau_window, ev.plateau_tolerance, ev.plateau_min_rounds)["plateaued"]

    def _evaluate(
        self, model: torch.nn.Module, round_index: int, global_state, test_cases, client_states
    ) -> tuple[Evaluation, dict[str, list] | None]:
        """Score the method's judged model on the hospital actors, all at once: the test volumes spread
        over the actors, and each hospital's held-out cases (federation.local_validation) on its home
        actor. Here only their scores are summed. Returns the test set's Evaluation and, per hospital
        with held-out cases, its cases' scores (None without local validation)."""
        judged = self.strategy.evaluation_model(model, round_index, client_states)
        if judged is model:  # the global weights, as the next round sends them
            served = {"weights": self._weights_ref(round_index, global_state)}
        else:  # a model of the method's own making (e.g. from the hospitals' states), put once
            served = {"judged": ray.put(judged)}
        actors = len(self.scheduler.actors)
        shares = [list(range(g, len(test_cases), actors)) for g in range(min(actors, len(test_cases)))]
        tasks = [(g, EvalTask(round_index, "test", tuple(test_cases[i] for i in share), **served))
                 for g, share in enumerate(shares)]
        held_out = [h for h in self.hospitals if h.validation] if round_index > 0 else []
        tasks += [(self.scheduler.home[h.hospital_id], EvalTask(round_index, h.hospital_id, h.validation, **served))
                  for h in held_out]
        reports = self.scheduler.evaluate(tasks)
        scores: list = [None] * len(test_cases)
        for share, report in zip(shares, reports):
            for i, score in zip(share, report.scores):
                scores[i] = score
        local = {r.key: list(r.scores) for r in reports[len(shares):]} if held_out else None
        return combine(scores, len(self.organs)), local

    def _weights_ref(self, after_round: int, global_state) -> ray.ObjectRef:
        """The encoded global weights after `after_round` in Ray's object store, put once: the
        evaluation after round r and round r + 1's training send the same object."""
        if self._weights is None or self._weights[0] != after_round:
            state = {k: v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v for k, v in global_state.items()}
            self._weights = (after_round, ray.put(encode_state(state)))
        return self._weights[1]

    def _broadcast_ref(self, round_index: int) -> ray.ObjectRef | None:
        """The method's extra payloads for the round in Ray's object store; put again only when they change."""
        extras = self.strategy.broadcast(round_index)
        if not extras:
            return None
        cached = self._broadcast
        if cached is None or cached[0].keys() != extras.keys() or any(cached[0][k] is not v for k, v in extras.items()):
            self._broadcast = cached = (dict(extras), ray.put(extras))
        return cached[1]

    def _summary(self, state: StudyState, model: torch.nn.Module, run: RunContext) -> dict:
        summary = {
            **evaluation_fields(self.organs, state.last_eval, True),
            Metric.BYTES_TOTAL.value: state.bytes_total,
            Metric.TRAIN_LOSS.value: run.rows[-1][Metric.TRAIN_LOSS.value],
            "dice/mean_untrained": state.untrained_dice,
            **_best(run.rows),
            **{k: v for k, v in run.rows[-1].items() if k.startswith("local_val/")},
            **plateau_fields(run.rows, self.config.eval.plateau_window, self.config.eval.plateau_tolerance,
                             self.config.eval.plateau_min_rounds),
            "comm/bytes_preparation": self.strategy.preparation_bytes(),
            "params_total": count_parameters(model),
            "bytes_per_model": len(encode_state(state.global_state)),
            "rounds": self.config.rounds,
            "rounds_trained": state.round,  # fewer than rounds where eval.stop_at_plateau ended the study
            "wall_s": state.wall_s,
            "run_id": run.run_id,
            "run_dir": str(self.config.run_dir),
            "tracking_uri": self.config.tracking.uri or _tracking_uri(self.config),
            "skipped_cases": self.skipped,
            "platforms": state.platforms,  # a seed reproduces only on the same ones (provenance.compute_platform)
            "actors": [{**placed, "tasks": n} for placed, n in zip(self.scheduler.placed, self.scheduler.tasks)],
            "first_round_at": self.first_round_at,  # Unix time this session's first round started
            "rounds_wall_s": self.rounds_wall_s,
        }
        return summary

    def _sample(self, round_index: int) -> list[Hospital]:
        """This round's hospitals: all, or `clients_per_round` drawn with a (seed, round) RNG."""
        k = self.config.federation.clients_per_round
        if k is None or k >= len(self.hospitals):
            return list(self.hospitals)
        rng = np.random.default_rng([self.config.seed, round_index])
        picks = sorted(rng.choice(len(self.hospitals), size=k, replace=False))
        return [self.hospitals[i] for i in picks]

    def _tags(self) -> dict[str, str]:
        cfg = self.config
        return {
            "method": cfg.method.name,
            "seed": str(cfg.seed),
            "data": cfg.data.source,
            "n_clients": str(len(self.hospitals)),
            "model": cfg.model.name,
            "study": cfg.name,
            "fedray_version": fedray.__version__,
            "torch_version": torch.__version__,
            "ray_version": ray.__version__,
            "monai_version": monai.__version__,
            "git_commit": git_commit(),
            "python_version": platform.python_version(),
            "role": "study",
            "config_digest": config_digest(flatten(to_data(cfg))),  # seeds of one configuration share it
            **({"mlflow.parentRunId": cfg.tracking.parent_run_id} if cfg.tracking.parent_run_id else {}),
            **_skipped_tags(self.skipped),
        }


def _best(rows: list[dict]) -> dict:
    """The evaluated round with the highest mean Dice (its checkpoint is checkpoints/best.npz)."""
    evaluated = [r for r in rows if not math.isnan(r[Metric.DICE_MEAN.value])]
    if not evaluated:
        return {"best_round": None, "dice/mean_best": math.nan}
    best = max(evaluated, key=lambda r: r[Metric.DICE_MEAN.value])  # the first of equal ones
    return {"best_round": best["round"], "dice/mean_best": best[Metric.DICE_MEAN.value]}


def _tracking_uri(config: StudyConfig) -> str:
    from fedray.tracking.mlflow import default_tracking_uri

    return default_tracking_uri(config.tracking.results_dir)


def _skipped_tags(skipped: list[dict]) -> dict[str, str]:
    """MLflow tags for the cases left out as bad input: their count and, within MLflow's limit, which."""
    if not skipped:
        return {"skipped_cases": "0"}
    listing = "; ".join(f"{b['site']}/{b['case']}: {b['reason']}" for b in skipped)
    return {"skipped_cases": str(len(skipped)), "skipped_cases_list": listing[:4000]}
