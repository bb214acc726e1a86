"""The driver: the only round loop. Samples hospitals, broadcasts weights, folds updates, evaluates, logs."""

from __future__ import annotations

from fedray.simulation.lean_imports import import_monai

import_monai()  # first, before anything imports MONAI (see lean_imports)

import logging
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
from ray.exceptions import RayActorError, RayTaskError

import fedray
from fedray.config import StudyConfig, flatten
from fedray.configtypes import to_data
from fedray.data.datasets import load_folder
from fedray.data.federation import Hospital
from fedray.errors import FedrayError
from fedray.messages import Metric, Progress, State, decode_state, dice_metric, encode_state, hd95_metric
from fedray.metrics.segmentation import dice_from_counts, mean_dice
from fedray.models.ensemble import OrganEnsemble
from fedray.models.factory import build_model, count_parameters
from fedray.simulation.ledger import RoundLedger
from fedray.simulation.placement import HospitalActors, create_hospital_actor, release_placement
from fedray.strategies import build_strategy
from fedray.strategies.base import state_to_torch
from fedray.tracking.checksums import ChecksumCache
from fedray.tracking.checkpoint import (
    Checkpoint,
    checkpoint_path,
    load_checkpoint,
    save_checkpoint,
    torch_state_from_bytes,
    torch_state_to_bytes,
)
from fedray.tracking.client_store import ClientStateStore
from fedray.tracking.mlflow import MlflowTracker, default_tracking_uri
from fedray.tracking.provenance import data_manifest, git_commit
from fedray.tracking.run_files import RunFiles
from fedray.training.evaluate import Evaluation, evaluate

log = logging.getLogger(__name__)

PIPELINE = 2  # tasks queued per hospital actor: one running, one ready, so an actor never waits on the driver

# organ index -> (teacher hospital id, head of that organ, the teacher's head count, payload)
Teachers = dict[int, tuple[str, int, int, bytes]]


class StudyStopped(Exception):
    """The user asked the study to stop (Ctrl-C); it stopped after a checkpoint."""


@dataclass
class StudyState:
    """The driver's state between rounds: exactly what a checkpoint holds."""

    round: int
    global_state: State
    untrained_dice: float
    last_eval: Evaluation
    teachers: Teachers = field(default_factory=dict)
    bytes_teachers: int = 0
    bytes_total: int = 0
    wall_s: float = 0.0
    server_optimizer: dict = field(default_factory=dict)

    def to_checkpoint(self, run_id: str, rows: list[dict]) -> Checkpoint:
        blobs = {f"teacher/{hid}": payload for hid, _, _, payload in self.teachers.values()}
        if self.server_optimizer:
            blobs["server_optimizer"] = torch_state_to_bytes(self.server_optimizer)
        meta = {
            "run_id": run_id,
            "rows": rows,
            "untrained_dice": self.untrained_dice,
            "last_counts": self.last_eval.counts.tolist(),
            "last_seconds": self.last_eval.seconds_per_volume,
            "last_hd95_mm": [None if math.isnan(h) else h for h in self.last_eval.hd95_mm],
            "teachers": {str(k): [hid, head, n] for k, (hid, head, n, _) in self.teachers.items()},
            "bytes_teachers": self.bytes_teachers,
            "bytes_total": self.bytes_total,
            "wall_s": self.wall_s,
        }
        return Checkpoint(self.round, self.global_state, meta, blobs)

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint) -> StudyState:
        meta, blobs = checkpoint.meta, checkpoint.blobs
        return cls(
            round=checkpoint.round,
            global_state=checkpoint.global_state,
            untrained_dice=meta["untrained_dice"],
            last_eval=Evaluation(
                np.array(meta["last_counts"], dtype=np.int64),
                meta["last_seconds"],
                np.array([math.nan if h is None else h for h in meta["last_hd95_mm"]], dtype=np.float64)
                if "last_hd95_mm" in meta
                else None,
            ),
            teachers={
                int(k): (hid, head, n, blobs[f"teacher/{hid}"]) for k, (hid, head, n) in meta["teachers"].items()
            },
            bytes_teachers=meta["bytes_teachers"],
            bytes_total=meta["bytes_total"],
            wall_s=meta["wall_s"],
            server_optimizer=torch_state_from_bytes(blobs["server_optimizer"]) if "server_optimizer" in blobs else {},
        )


class Driver:
    """Runs one study, in a Ray actor (`actors.DriverActor`, see `launch`) or in-process in tests."""

    def __init__(
        self,
        config: StudyConfig,
        hospitals: list[Hospital],
        test_dir: Path,
        resume: bool = False,
        skipped: tuple[dict, ...] = (),
    ) -> None:
        self.config = config
        self.skipped = list(skipped)
        self.first_round_at: float | None = None
        self.rounds_wall_s = 0.0  # this session: first round's dispatch to last new global weights, without evaluation
        self.hospitals = hospitals
        self.test_dir = test_dir
        self.resume = resume
        self.organs = list(config.data.organs)
        self.strategy = build_strategy(config.method)
        self._progress = Progress(rounds=config.rounds)
        self._lock = threading.Lock()
        self._stop = threading.Event()

    # -- called concurrently by the CLI (threaded actor) ------------------------------------------
    def progress(self) -> Progress:
        """A snapshot of the study's progress."""
        with self._lock:
            return Progress(**vars(self._progress))

    def stop(self) -> None:
        """Ask the study to stop after the current round's checkpoint."""
        self._stop.set()

    # -- the round loop ---------------------------------------------------------------------------
    def run(self, started: HospitalActors) -> dict:
        """Run (or resume) every round and return the summary (also written to summary.json).

        `started`: the hospital actors, started by the launcher so that they start while this actor does.
        """
        cfg = self.config
        try:
            self._adopt_actors(started)
            if not self.resume:  # round 1's data loads while MLflow and the test set are set up
                for hospital in self._sample(1):
                    self._data(hospital)
            return self._tracked_run()
        finally:
            release_placement(cfg)  # the study's actors are done with their bundles

    def _tracked_run(self) -> dict:
        cfg = self.config
        files = RunFiles(cfg.run_dir)
        tracker = MlflowTracker(
            cfg.tracking.uri or default_tracking_uri(cfg.tracking.results_dir),
            cfg.tracking.experiment,
            Path(cfg.tracking.results_dir) / "mlartifacts",
        )
        checkpoint = load_checkpoint(checkpoint_path(cfg.run_dir)) if self.resume else None
        if checkpoint is None:
            files.write_config(cfg)
            checksums = ChecksumCache(Path(cfg.data.cache_dir) / "checksums.sqlite" if cfg.data.persistent_cache else None)
            manifest = data_manifest({h.hospital_id: h.files for h in self.hospitals}, self.test_dir, checksums)
            files.write_json("data_manifest.json", manifest)
            tags = {**self._tags(), "data_manifest_sha256": manifest["study"], **_skipped_tags(self.skipped)}
            if self.skipped:
                files.write_json("skipped_cases.json", self.skipped)
            tracker.start(cfg.run_name, flatten(to_data(cfg)), tags)
            tracker.log_artifact(files.run_dir / "data_manifest.json")
        else:
            tracker.reopen(checkpoint.meta["run_id"])
            files.rows = list(checkpoint.meta["rows"])
        self._update(run_id=tracker.run_id, phase="loading data")
        try:
            summary = self._rounds(tracker, files, checkpoint)
        except StudyStopped:
            tracker.end("KILLED")
            raise
        except BaseException:
            tracker.end("FAILED")
            raise
        for path in (files.config_path, files.rounds_path, files.summary_path):
            tracker.log_artifact(path)
        tracker.end("FINISHED")
        return summary

    def _adopt_actors(self, started: HospitalActors) -> None:
        cfg = self.config
        self.plans, self.placement, self.actors = started.plans, started.placement, list(started.actors)
        self.home = {h.hospital_id: g for g, plan in enumerate(self.plans) for h in plan.hospitals}
        self.dedicated = {g for g, plan in enumerate(self.plans) if plan.dedicated}
        self.data: dict[str, ray.ObjectRef] = {}  # hospital -> its training arrays in the object store
        self.tasks = [0] * len(self.actors)  # local updates each actor group ran (this session)
        self.generations: dict[int, int] = {}  # group -> replacements so far
        self.client_store = ClientStateStore(cfg.run_dir / "client_state")

    def _await_actors(self) -> None:
        """Wait until every hospital actor is up; note where each runs."""
        ray.get([actor.ready.remote() for actor in self.actors])
        nodes = ray.get([actor.node_id.remote() for actor in self.actors])
        self.placed = [
            {"actor": g, "node_id": node, "cpus": plan.cpus, "gpus": plan.gpus,
             "hospitals": [h.hospital_id for h in plan.hospitals]}
            for g, (plan, node) in enumerate(zip(self.plans, nodes))
        ]

    def _data(self, hospital: Hospital) -> ray.ObjectRef:
        """The hospital's training arrays, loaded by its home actor on first use and kept by the driver.

        The object is owned by the driver, so it outlives the actor that loaded it; a load that
        failed with its actor is forgotten (`_forget_lost_data`) and done again.
        """
        ref = self.data.get(hospital.hospital_id)
        if ref is None:
            ref = self.actors[self.home[hospital.hospital_id]].load.remote(hospital)
            self.data[hospital.hospital_id] = ref
        return ref

    def _forget_lost_data(self, hospital: Hospital) -> None:
        ref = self.data.get(hospital.hospital_id)
        if ref is None:
            return
        ready, _ = ray.wait([ref], timeout=0)
        if not ready:
            del self.data[hospital.hospital_id]  # pending on an actor that may be gone: load again
            return
        try:
            ray.get(ref, timeout=0)
        except (RayActorError, RayTaskError):
            del self.data[hospital.hospital_id]

    def _rounds(self, tracker: MlflowTracker, files: RunFiles, checkpoint: Checkpoint | None) -> dict:
        cfg = self.config
        session_start = time.perf_counter()
        torch.manual_seed(cfg.seed)  # same initial weights for every method run with this seed
        model = build_model(cfg.model, len(self.organs))
        test_cases = load_folder(self.test_dir, self.organs, cfg.data.hu_window, preprocess=cfg.data.preprocess)
        logged_through = 0  # rounds MLflow already holds (a resumed run may redo some of them)
        if checkpoint is not None:
            state = StudyState.from_checkpoint(checkpoint)
            self.client_store.rollback(state.round)  # states written after the checkpoint are redone
            self.strategy.server_optimizer.load_state_dict(state.server_optimizer)
            logged_through = self._log_missing_rounds(tracker, files)
        else:
            untrained = evaluate(self._evaluated(model, 0), test_cases, cfg.model.output, cfg.eval, len(self.organs))
            state = StudyState(
                round=0,
                global_state={k: v.detach().cpu().numpy() for k, v in model.state_dict().items()},
                untrained_dice=mean_dice(dice_from_counts(untrained.counts)),
                last_eval=untrained,
            )
        self._await_actors()
        if checkpoint is None and self.strategy.teacher_steps() > 0:
            self._update(phase="pre-training teachers")
            state.teachers, state.bytes_teachers = self._pretrain_teachers(self.strategy.teacher_steps())
            state.bytes_total = state.bytes_teachers
        teachers_ref = ray.put(state.teachers) if state.teachers else None
        wall_before = state.wall_s
        rounds_began = time.perf_counter()
        evaluating_s = 0.0  # evaluation time since rounds_began

        for round_index in range(state.round + 1, cfg.rounds + 1):
            round_start = time.perf_counter()
            chosen = self._sample(round_index)
            self._update(phase="training", round=round_index, clients_done=0, clients=len(chosen))
            payload_ref = ray.put(encode_state(state.global_state))  # one broadcast per round
            ledger = RoundLedger(self.strategy, state.global_state)
            if self.first_round_at is None:
                self.first_round_at = time.time()
            faults = self._train_round(round_index, chosen, payload_ref, teachers_ref, ledger)
            state.global_state = ledger.new_global_state()
            train_s = time.perf_counter() - round_start
            self.rounds_wall_s = time.perf_counter() - rounds_began - evaluating_s
            state.bytes_total += ledger.account.bytes_down + ledger.account.bytes_up

            evaluated = round_index % cfg.eval.every == 0 or round_index == cfg.rounds
            eval_s = math.nan
            if evaluated:
                self._update(phase="evaluating")
                eval_start = time.perf_counter()
                model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.global_state.items()})
                state.last_eval = evaluate(
                    self._evaluated(model, round_index), test_cases, cfg.model.output, cfg.eval, len(self.organs)
                )
                eval_s = time.perf_counter() - eval_start
                evaluating_s += eval_s
            dice = dice_from_counts(state.last_eval.counts) if evaluated else np.full(len(self.organs), np.nan)
            row = {
                "round": round_index,
                Metric.DICE_MEAN.value: mean_dice(dice) if evaluated else math.nan,
                **{dice_metric(o): float(d) for o, d in zip(self.organs, dice)},
                **{hd95_metric(o): float(h) if evaluated else math.nan for o, h in zip(self.organs, state.last_eval.hd95_mm)},
                Metric.INFER_S_PER_VOLUME.value: state.last_eval.seconds_per_volume if evaluated else math.nan,
                Metric.BYTES_DOWN.value: ledger.account.bytes_down,
                Metric.BYTES_UP.value: ledger.account.bytes_up,
                Metric.BYTES_TOTAL.value: state.bytes_total,
                Metric.ROUND_S.value: time.perf_counter() - round_start,
                Metric.TRAIN_S.value: train_s,
                Metric.EVAL_S.value: eval_s,
                Metric.TRAIN_LOSS.value: ledger.train_loss,
                Metric.REJECTED.value: len(ledger.rejected),
                Metric.COMPUTE_MAX_S.value: max(ledger.account.compute_s.values(), default=0.0),
                Metric.COMPUTE_SUM_S.value: sum(ledger.account.compute_s.values()),
                **faults,
                "clients": len(chosen),
            }
            state.round = round_index
            state.wall_s = wall_before + time.perf_counter() - session_start
            state.server_optimizer = self.strategy.server_optimizer.state_dict()
            # Checkpoint before logging: a study killed in between re-logs this round on resume,
            # never twice (see _log_missing_rounds).
            every = cfg.tracking.checkpoint_every
            if round_index == cfg.rounds or self._stop.is_set() or (every and round_index % every == 0):
                save_checkpoint(state.to_checkpoint(tracker.run_id, [*files.rows, row]), checkpoint_path(cfg.run_dir))
                self.client_store.prune(round_index)
            files.add_round(row)
            if round_index > logged_through:
                tracker.log_metrics(_logged(row), step=round_index)
            self._update(
                phase="training",
                dice_mean=float(mean_dice(dice_from_counts(state.last_eval.counts))),
                elapsed_s=state.wall_s,
                eta_s=state.wall_s / round_index * (cfg.rounds - round_index),
            )
            if self._stop.is_set() and round_index < cfg.rounds:
                raise StudyStopped()
        return self._finish(state, model, files, tracker)

    def _finish(self, state: StudyState, model: torch.nn.Module, files: RunFiles, tracker: MlflowTracker) -> dict:
        final_dice = dice_from_counts(state.last_eval.counts)
        summary = {
            Metric.DICE_MEAN.value: mean_dice(final_dice),
            **{dice_metric(o): float(d) for o, d in zip(self.organs, final_dice)},
            **{hd95_metric(o): float(h) for o, h in zip(self.organs, state.last_eval.hd95_mm)},
            Metric.INFER_S_PER_VOLUME.value: state.last_eval.seconds_per_volume,
            Metric.BYTES_TOTAL.value: state.bytes_total,
            Metric.TRAIN_LOSS.value: files.rows[-1][Metric.TRAIN_LOSS.value],
            "dice/mean_untrained": state.untrained_dice,
            "comm/bytes_teachers": state.bytes_teachers,
            "params_total": count_parameters(model),
            "bytes_per_model": len(encode_state(state.global_state)),
            "rounds": self.config.rounds,
            "wall_s": state.wall_s,
            "run_id": tracker.run_id,
            "run_dir": str(files.run_dir),
            "tracking_uri": tracker.uri,
            "skipped_cases": self.skipped,
            "actors": [{**placed, "tasks": n} for placed, n in zip(self.placed, self.tasks)],
            "first_round_at": self.first_round_at,  # Unix time this session's first round started
            "rounds_wall_s": self.rounds_wall_s,
        }
        files.write_summary(summary)
        tracker.log_metrics(
            {k: summary[k] for k in ("dice/mean_untrained", "params_total", "comm/bytes_teachers")}, step=0
        )
        self._update(phase="done", elapsed_s=state.wall_s, eta_s=0.0)
        return summary

    def _train_round(
        self, round_index: int, chosen: list[Hospital], payload_ref, teachers_ref, ledger: RoundLedger
    ) -> dict[str, int]:
        """Hand the round's hospitals to idle actors one by one, then collect each actor's partial sum.

        Each actor has up to PIPELINE tasks queued, preferring hospitals whose data it loaded. Once no
        hospital is left to hand out, each actor is asked for its partial sum straight away: the
        request queues behind its last training task, so the sum comes back without another round
        trip. Simulated dropouts are not dispatched; a hospital whose training raised, or whose actor
        died (taking the updates summed there with it), is retried up to faults.max_retries times,
        then dropped; with a deadline, updates whose slowed local time exceeds it are discarded as
        late. Returns the fault counts.
        """
        faults = self.config.faults
        counts = {m.value: 0 for m in (Metric.RETRIES, Metric.DROPPED, Metric.DROPOUT)}
        draws = {h.hospital_id: self._fault_draws(round_index, h) for h in chosen}
        queue: list[Hospital] = []
        for hospital in chosen:
            if draws[hospital.hospital_id][0] < faults.dropout:
                counts[Metric.DROPOUT.value] += 1
            else:
                queue.append(hospital)
        attempts = {h.hospital_id: 0 for h in queue}
        trains: dict = {}  # task -> (actor group, actor handle, hospital)
        flushes: dict = {}  # task -> (actor group, actor handle)
        busy = [0] * len(self.actors)
        unflushed: set[int] = set()  # groups sent training since their last flush
        summed_on: dict[int, list[Hospital]] = {}  # group -> trained there, in its sum, not merged yet
        merged: set[str] = set()  # hospitals whose updates are in `ledger`
        done = counts[Metric.DROPOUT.value]
        pinned = self.config.resources.scheduling == "pinned"
        partial = self.strategy.partial_aggregation
        prefetched = False

        def takes(group: int, hospital: Hospital) -> bool:
            home = self.home[hospital.hospital_id]
            return home == group or not (pinned or home in self.dedicated or group in self.dedicated)

        def fill(group: int, depth: int = PIPELINE) -> None:
            while busy[group] < depth and queue:
                pick = next((i for i, h in enumerate(queue) if self.home[h.hospital_id] == group), None)
                if pick is None:
                    pick = next((i for i, h in enumerate(queue) if takes(group, h)), None)
                if pick is None:
                    return
                hospital = queue.pop(pick)
                hid = hospital.hospital_id
                state = self.client_store.get(hid, round_index) if self.strategy.stateful else None
                slowdown = faults.straggler_slowdown if draws[hid][1] < faults.straggler_fraction else 1.0
                actor = self.actors[group]
                task = actor.train.remote(
                    round_index, hospital, self._data(hospital), payload_ref, teachers_ref, state, slowdown,
                    faults.deadline_s,
                )
                trains[task] = (group, actor, hospital)
                unflushed.add(group)
                busy[group] += 1

        def dispatch() -> None:
            nonlocal prefetched
            for depth in range(1, PIPELINE + 1):  # one task each first, so small rounds spread out
                for group in range(len(self.actors)):
                    fill(group, depth)
            if queue:
                return
            if partial:
                for group in sorted(unflushed):  # nothing left to hand out: collect the sums
                    actor = self.actors[group]
                    flushes[actor.flush.remote(round_index)] = (group, actor)
                unflushed.clear()
            if not prefetched:
                prefetched = True
                self._prefetch(round_index + 1)

        def retry_or_drop(hospital: Hospital, why: object) -> None:
            hid = hospital.hospital_id
            if attempts[hid] < faults.max_retries:
                attempts[hid] += 1
                counts[Metric.RETRIES.value] += 1
                queue.append(hospital)
            else:
                log.warning("dropped %s from round %d after %d retries: %s", hid, round_index, attempts[hid], why)
                counts[Metric.DROPPED.value] += 1

        def actor_died(group: int, dead) -> None:
            nonlocal done
            if self.actors[group] is not dead:
                return  # already replaced; its losses were counted then
            self._replace_actor(group, dead)
            unflushed.discard(group)  # its tasks fail one by one and are retried
            lost = summed_on.pop(group, [])
            done -= len(lost)
            for hospital in lost:  # their updates were in the dead actor's partial sum
                retry_or_drop(hospital, "its actor died before sending the round's sum")

        def trained(task) -> None:
            nonlocal done
            group, actor, hospital = trains.pop(task)
            busy[group] -= 1
            try:
                report = ray.get(task)
            except (RayActorError, RayTaskError) as error:
                if isinstance(getattr(error, "cause", None), FedrayError):
                    raise error.cause from None  # a configuration problem, not a failing hospital
                if isinstance(error, RayActorError):
                    actor_died(group, actor)
                self._forget_lost_data(hospital)
                retry_or_drop(hospital, error)
                return
            if report.failed is not None:
                retry_or_drop(hospital, report.failed)
                return
            hid = hospital.hospital_id
            if report.result is not None:
                ledger.add(report.result)
            elif hid not in merged:
                if self.actors[group] is not actor:  # trained, but summed on an actor that died since
                    retry_or_drop(hospital, "its actor died before sending the round's sum")
                    return
                summed_on.setdefault(group, []).append(hospital)
            if report.client_state is not None:
                self.client_store.put(hid, round_index, report.client_state)
            done += 1
            self.tasks[group] += 1
            self._update(clients_done=done, train_loss=ledger.train_loss)

        def summed(task) -> None:
            group, actor = flushes.pop(task)
            try:
                part = ray.get(task)
            except RayActorError:
                actor_died(group, actor)
                return
            ledger.merge(part)
            covered = set(part.account.compute_s)  # every hospital the actor's ledger took in
            merged.update(covered)
            summed_on[group] = [h for h in summed_on.get(group, []) if h.hospital_id not in covered]

        dispatch()
        while trains or flushes:
            [task], _ = ray.wait([*trains, *flushes], num_returns=1)
            if task in trains:
                trained(task)
            else:
                summed(task)
            dispatch()
        return {**counts, Metric.LATE.value: len(ledger.account.late)}

    def _prefetch(self, round_index: int) -> None:
        """Start loading the data of round `round_index`'s hospitals that were never loaded.

        Called once the current round has handed out its last hospital: the loads queue on their home
        actors behind that round's last tasks and partial sums, so the next round finds its data in
        the object store instead of loading it on first use, when a task handed to another actor
        would wait for the home actor to get to the load.
        """
        if round_index <= self.config.rounds:
            for hospital in self._sample(round_index):
                self._data(hospital)

    def _fault_draws(self, round_index: int, hospital: Hospital) -> tuple[float, float]:
        """(dropout draw, straggler draw) for one hospital and round, from (seed, round, hospital)."""
        rng = np.random.default_rng([self.config.seed, round_index, hospital.index, 0xFA])
        return float(rng.random()), float(rng.random())

    def _replace_actor(self, group: int, dead) -> None:
        """Start a fresh actor in the bundle of group `group`'s dead actor (once per death)."""
        if self.actors[group] is not dead:
            return  # already replaced
        self.generations[group] = self.generations.get(group, 0) + 1
        ray.kill(dead)  # unreachable but maybe alive: free its bundle for the replacement
        actor = create_hospital_actor(self.config, self.plans[group], self.placement, group, self.generations[group])
        ray.get(actor.ready.remote())
        self.actors[group] = actor
        log.warning("hospital actor %d died; replaced it", group)

    def _log_missing_rounds(self, tracker: MlflowTracker, files: RunFiles) -> int:
        """On resume: log the checkpointed rounds MLflow had not received; return the last round it has.

        Rounds after the checkpoint that MLflow already holds are recomputed but not logged again.
        """
        logged = tracker.last_step(Metric.BYTES_TOTAL.value)  # always finite, so logged every round
        for row in files.rows:
            if row["round"] > logged:
                tracker.log_metrics(_logged(row), step=row["round"])
        files.rewrite()
        return max(logged, len(files.rows))

    def _pretrain_teachers(self, steps: int) -> tuple[Teachers, int]:
        """Pre-train one organ-specific teacher per organ and share it once with the other hospitals.

        Organ k's teacher is trained by the hospital with the most cases among those labelling k
        (lowest index on ties), so a study with hundreds of hospitals pre-trains at most one model
        per organ. Returns {organ: (teacher id, head, head count, payload)} and the bytes this costs: each teacher
        uploaded once, and downloaded by every hospital that lacks one of its organs.
        """
        teacher_of = self._organ_owners()
        teacher_hospitals = {h.hospital_id for h in teacher_of.values()}
        by_id = {h.hospital_id: h for h in self.hospitals}
        refs = {
            hid: self.actors[self.home[hid]].pretrain_teacher.remote(by_id[hid], self._data(by_id[hid]), steps)
            for hid in sorted(teacher_hospitals)
        }
        payloads = {hid: ray.get(ref) for hid, ref in refs.items()}
        teachers = {}
        for k, hospital in teacher_of.items():
            own = [o for o in self.organs if o in hospital.organs]
            teachers[k] = (hospital.hospital_id, own.index(self.organs[k]), len(own), payloads[hospital.hospital_id])
        uploaded = sum(len(p) for p in payloads.values())
        downloaded = 0
        for hospital in self.hospitals:
            needed = {teacher_of[k].hospital_id for k, o in enumerate(self.organs) if o not in hospital.organs}
            downloaded += sum(len(payloads[t]) for t in needed - {hospital.hospital_id})
        return teachers, uploaded + downloaded

    def _organ_owners(self) -> dict[int, Hospital]:
        """Per organ index, the hospital with the most cases among those labelling it (lowest index on ties)."""
        return {
            k: min((h for h in self.hospitals if organ in h.organs), key=lambda h: (-h.num_cases, h.index))
            for k, organ in enumerate(self.organs)
        }

    def _evaluated(self, model: torch.nn.Module, round_index: int) -> torch.nn.Module:
        """The model the study is judged by: the global model, or for local-only training, each organ
        predicted by its own hospital's model (the owner of the organ, as for teachers)."""
        if self.strategy.communicates:
            return model
        models, picks, column = [], [], {}
        for k, hospital in self._organ_owners().items():
            if hospital.hospital_id not in column:
                payload = self.client_store.get(hospital.hospital_id, round_index + 1)
                own = build_model(self.config.model, len(self.organs))
                own.load_state_dict(model.state_dict() if payload is None else state_to_torch(decode_state(payload)))
                column[hospital.hospital_id] = len(models)
                models.append(own)
            picks.append((column[hospital.hospital_id], k))
        return OrganEnsemble(models, picks)

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
            **({"mlflow.parentRunId": cfg.tracking.parent_run_id} if cfg.tracking.parent_run_id else {}),
        }

    def _update(self, **values: object) -> None:
        with self._lock:
            for key, value in values.items():
                setattr(self._progress, key, value)


def _skipped_tags(skipped: list[dict]) -> dict[str, str]:
    """MLflow tags for the cases left out as bad input: their count and, within MLflow's limit, which."""
    if not skipped:
        return {"skipped_cases": "0"}
    listing = "; ".join(f"{b['site']}/{b['case']}: {b['reason']}" for b in skipped)
    return {"skipped_cases": str(len(skipped)), "skipped_cases_list": listing[:4000]}


def _logged(row: dict) -> dict[str, float]:
    """A rounds.csv row as MLflow metrics (without the round and client count)."""
    return {k: v for k, v in row.items() if k not in ("round", "clients")}
