"""Hand hospital tasks to idle actors: dispatch, retries, actor replacement and partial-sum collection."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
from ray.exceptions import RayActorError, RayTaskError

from fedray.config import StudyConfig
from fedray.data.case_store import StoredCase, stored_cases
from fedray.data.federation import Hospital
from fedray.errors import FedrayError
from fedray.messages import EvalReport, EvalTask, Metric, PrepareTask, TrainTask
from fedray.simulation.ledger import RoundLedger
from fedray.simulation.placement import HospitalActors, create_hospital_actor
from fedray.strategies.base import PrepareJob
from fedray.tracking.client_store import ClientStateStore

log = logging.getLogger(__name__)

PIPELINE = 2  # calls queued per hospital actor: one running, one ready, so an actor never waits on the driver
CALL_SHARE = 2  # a training call takes at most 1/(CALL_SHARE x actors) of the hospitals left to hand out
MAX_HOSPITALS_PER_CALL = 10  # ... and at most this many (automatic batching)
CALL_STATE_BYTES = 64 << 20  # ... and client states of at most this many bytes (beyond its first hospital's)


def hospitals_per_call(remaining: int, actors: int, fixed: int | None, batched: bool) -> int:
    """How many of the `remaining` hospitals the next training call carries.

    Automatic (`fixed` None): guided self-scheduling, ceil(remaining / (CALL_SHARE x actors)) capped
    at MAX_HOSPITALS_PER_CALL, so early calls carry several hospitals (Ray costs about 5 ms of CPU
    per call on a 2-core machine) and calls shrink to one hospital as the round runs out, so no actor
    is left with a long batch while another idles. The scheduler takes one automatic size per
    dispatch pass over the actors (factoring), so 10 hospitals on 2 actors take calls of 3, 3, 1, 1,
    1, 1; 100 take about 17 calls; and a round of one hospital per actor still spreads one each. Without partial aggregation
    (`batched` False) each reply carries its hospital's update, so a call carries one hospital.
    A `fixed` size (resources.hospitals_per_call) is still capped at an even share of the remaining
    hospitals, so small rounds spread over the actors.
    """
    share = max(1, math.ceil(remaining / max(1, actors)))
    if fixed is not None:
        return min(fixed, share)
    if not batched:
        return 1
    return max(1, min(MAX_HOSPITALS_PER_CALL, math.ceil(remaining / (CALL_SHARE * max(1, actors)))))


@dataclass
class RoundInFlight:
    """A round whose first calls are queued on the actors (`RoundScheduler.start_round`)."""

    chosen: list[Hospital]
    ledger: RoundLedger
    finish: Callable[[], dict[str, int]]  # waits for the round's replies and sums; the fault counts
    started: float  # perf_counter when start_round began


class RoundScheduler:
    """Runs a study's hospital tasks on its hospital actors, and keeps them alive.

    A task names its hospital's cases in the case store (paths, not arrays), so any actor may train
    any hospital unless scheduling is pinned or the hospital (or the actor) is dedicated. An actor
    that dies is replaced in its own bundle.
    """

    def __init__(self, config: StudyConfig, started: HospitalActors, client_store: ClientStateStore) -> None:
        self.config = config
        self.plans, self.placement, self.actors = started.plans, started.placement, list(started.actors)
        self.home = {h.hospital_id: g for g, plan in enumerate(self.plans) for h in plan.hospitals}
        self.dedicated = {g for g, plan in enumerate(self.plans) if plan.dedicated}
        self.data: dict[str, tuple[StoredCase, ...]] = {}  # hospital -> its cases in the case store
        self.tasks = [0] * len(self.actors)  # local updates each actor group ran (this session)
        self.generations: dict[int, int] = {}  # group -> replacements so far
        self.client_store = client_store
        self.placed: list[dict] = []
        self.eval_retries = 0  # evaluation tasks run again by the last `evaluate` (their actor died)
        self.train_calls = 0  # remote training calls of the last round (several hospitals each: hospitals_per_call)
        self.outcomes: dict[str, tuple[str, int]] = {}  # last round: hospital -> (not trained: why, retries)
        self.steps_to = None  # where hospitals report their local steps (the driver, while it is watched)
        self._told: set[int] = set()  # actor groups told `steps_to`

    def await_actors(self) -> None:
        """Wait until every hospital actor is up; note where each runs."""
        ray.get([actor.ready.remote() for actor in self.actors])
        machines = ray.get([actor.machine.remote() for actor in self.actors])
        self.placed = [
            {"actor": g, "node_id": machine["node_id"], "cpus": plan.cpus, "gpus": plan.gpus,
             "hospitals": [h.hospital_id for h in plan.hospitals], "platform": machine["platform"]}
            for g, (plan, machine) in enumerate(zip(self.plans, machines))
        ]

    def _data(self, hospital: Hospital) -> tuple[StoredCase, ...]:
        """The hospital's cases in the case store (keys from its files' stamps, found once per study)."""
        refs = self.data.get(hospital.hospital_id)
        if refs is None:
            refs = self.data[hospital.hospital_id] = stored_cases(hospital, self.config.data)
        return refs

    def prepare(self, jobs: Sequence[PrepareJob], on_done: Callable[[PrepareJob, bytes], None]) -> None:
        """Run a method's preparation jobs on their hospitals' home actors; `on_done` as each finishes.

        A job whose actor died is run again on the replacement, up to faults.max_retries times.
        """
        self._tell_steps_to()  # a watched study shows each job's steps (a method's pre-training may be long)
        tasks = [(self.home[job.hospital.hospital_id], PrepareTask(job, self._data(job.hospital))) for job in jobs]
        self._run_all(tasks, lambda index, report: on_done(jobs[index], report.prepared))

    def evaluate(self, tasks: Sequence[tuple[int, EvalTask]]) -> list[EvalReport]:
        """Run evaluation tasks, each on the actor of its group, all at once; the reports in order.

        A task whose actor died is run again on the replacement (which loads its volumes again), up to
        faults.max_retries times; `eval_retries` holds how many were.
        """
        reports: list[EvalReport | None] = [None] * len(tasks)
        self.eval_retries = self._run_all(tasks, reports.__setitem__)
        return reports

    def _run_all(self, tasks: Sequence[tuple[int, Any]], on_report: Callable[[int, Any], None]) -> int:
        """Run (group, task) pairs at once on their groups' actors; `on_report(index, report)` as each ends.

        A task whose actor died is run again on the group's replacement, up to faults.max_retries
        times; a configuration error raised in a task is raised here. Returns the reruns.
        """
        attempts = [0] * len(tasks)
        running: dict = {}

        def submit(index: int) -> None:
            group, task = tasks[index]
            actor = self.actors[group]
            running[actor.run.remote(task)] = (index, group, actor)

        for index in range(len(tasks)):
            submit(index)
        while running:
            [done], _ = ray.wait(list(running), num_returns=1)
            index, group, actor = running.pop(done)
            try:
                report = ray.get(done)
            except RayActorError:
                if attempts[index] >= self.config.faults.max_retries:
                    raise
                attempts[index] += 1
                self._replace_actor(group, actor)
                submit(index)
                continue
            except RayTaskError as error:
                if isinstance(getattr(error, "cause", None), FedrayError):
                    raise error.cause from None
                raise
            on_report(index, report)
        return sum(attempts)

    def start_round(
        self,
        round_index: int,
        chosen: list[Hospital],
        payload_ref,
        extras_ref,
        ledger: RoundLedger,
        partial_aggregation: bool,
        on_progress: Callable[[int, RoundLedger], None],
    ) -> RoundInFlight:
        """Queue the round's first calls on the actors and return at once; its `finish()` runs the rest.

        Between the two the actors train while the driver does other work (the previous round's run
        files and MLflow rows). Replies wait in Ray until `finish`, so nothing of this round reaches
        the ledger, the client store or `outcomes` before it; `outcomes` and `train_calls` still
        describe the last finished round until then.

        The round's hospitals go to idle actors a few at a time, then each actor's partial sum is
        collected. Each actor has up to PIPELINE calls queued, preferring its home hospitals; a call carries
        several hospitals (`hospitals_per_call`: fewer as the round runs out) and returns a report
        per hospital. Once no hospital is left to hand out, each actor is asked for its partial sum
        straight away: the request queues behind its last training call, so the sum comes back
        without another round trip. Simulated dropouts are not dispatched; a hospital whose training
        raised, or whose actor died (taking its call's hospitals and the updates summed there with
        it), is retried up to faults.max_retries times, then dropped; a retried hospital goes in a
        call of its own, so one that kills its actor cannot use up its call mates' retries. With a
        deadline, updates whose slowed local time exceeds it are discarded as late. `finish` returns
        the fault counts.
        """
        started = time.perf_counter()
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
        queued = {h.hospital_id for h in queue}
        outcomes = {h.hospital_id: ("dropout", 0) for h in chosen if h.hospital_id not in queued}
        calls = 0  # training calls sent this round
        trains: dict = {}  # call -> (actor group, actor handle, its hospitals in order)
        flushes: dict = {}  # task -> (actor group, actor handle)
        busy = [0] * len(self.actors)
        unflushed: set[int] = set()  # groups sent training since their last flush
        summed_on: dict[int, list[Hospital]] = {}  # group -> trained there, in its sum, not merged yet
        merged: set[str] = set()  # hospitals whose updates are in `ledger`
        done = counts[Metric.DROPOUT.value]
        pinned = self.config.resources.scheduling == "pinned"
        fixed = self.config.resources.hospitals_per_call

        def takes(group: int, hospital: Hospital) -> bool:
            home = self.home[hospital.hospital_id]
            return home == group or not (pinned or home in self.dedicated or group in self.dedicated)

        def pick(group: int) -> int | None:
            """The queue index of the hospital `group` trains next: a home hospital first, then any it takes."""
            found = next((i for i, h in enumerate(queue) if self.home[h.hospital_id] == group), None)
            if found is None:
                found = next((i for i, h in enumerate(queue) if takes(group, h)), None)
            return found

        def task_of(hospital: Hospital, state: bytes | None) -> TrainTask:
            slowdown = faults.straggler_slowdown if draws[hospital.hospital_id][1] < faults.straggler_fraction else 1.0
            return TrainTask(
                round=round_index,
                hospital=hospital,
                data=self._data(hospital),
                global_payload=payload_ref,
                extras=extras_ref,
                client_state=state,
                slowdown=slowdown,
                deadline_s=faults.deadline_s,
            )

        def fill(group: int, depth: int, size: int | None) -> None:
            """Queue calls on `group` up to `depth`, each of `size` hospitals (None: sized per call)."""
            nonlocal calls
            while busy[group] < depth and queue:
                call_size = size or hospitals_per_call(len(queue), len(self.actors), fixed, partial_aggregation)
                batch: list[Hospital] = []
                tasks: list[TrainTask] = []
                state_bytes = 0
                while len(batch) < call_size:
                    index = pick(group)
                    if index is None:
                        break
                    hid = queue[index].hospital_id
                    if batch and attempts[hid]:
                        break  # a retried hospital goes alone, in the next call
                    state = self.client_store.get(hid, round_index)
                    if batch and state_bytes + len(state or b"") > CALL_STATE_BYTES:
                        break
                    state_bytes += len(state or b"")
                    hospital = queue.pop(index)
                    batch.append(hospital)
                    tasks.append(task_of(hospital, state))
                    if attempts[hid]:
                        break
                if not batch:
                    return
                actor = self.actors[group]
                trains[actor.run_batch.remote(tasks)] = (group, actor, batch)
                calls += 1
                unflushed.add(group)
                busy[group] += 1

        def dispatch() -> None:
            self._tell_steps_to()
            for depth in range(1, PIPELINE + 1):  # one call each first, so small rounds spread out
                # One size for the whole pass (factoring): every actor's call takes the same share of
                # what is left, so the queued calls of the first actors served do not commit most of a
                # small round to them (10 hospitals on 2 actors: 3 + 3, then single hospitals, not
                # 3 + 2 + 2 + 1), and the round's last hospitals still go to whichever actor is free.
                # A fixed size (resources.hospitals_per_call) stays sized per call: its even-share cap
                # then spreads a small round over every actor (5 on 4 at 2 a call: 2, 1, 1, 1).
                size = hospitals_per_call(len(queue), len(self.actors), fixed, partial_aggregation) if fixed is None else None
                for group in range(len(self.actors)):
                    fill(group, depth, size)
            if queue:
                return
            if partial_aggregation:
                for group in sorted(unflushed):  # nothing left to hand out: collect the sums
                    actor = self.actors[group]
                    flushes[actor.flush.remote(round_index)] = (group, actor)
                unflushed.clear()

        def retry_or_drop(hospital: Hospital, why: object) -> None:
            hid = hospital.hospital_id
            if attempts[hid] < faults.max_retries:
                attempts[hid] += 1
                counts[Metric.RETRIES.value] += 1
                queue.append(hospital)
            else:
                log.warning("dropped %s from round %d after %d retries: %s", hid, round_index, attempts[hid], why)
                counts[Metric.DROPPED.value] += 1
                outcomes[hid] = ("dropped", attempts[hid])

        def actor_died(group: int, dead) -> None:
            nonlocal done
            if self.actors[group] is not dead:
                return  # already replaced; its losses were counted then
            self._replace_actor(group, dead)
            unflushed.discard(group)  # its calls fail one by one and their hospitals are retried
            lost = summed_on.pop(group, [])
            done -= len(lost)
            for hospital in lost:  # their updates were in the dead actor's partial sum
                retry_or_drop(hospital, "its actor died before sending the round's sum")

        def reported(group: int, actor, hospital: Hospital, report) -> None:
            nonlocal done
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
            on_progress(done, ledger)

        def trained(call) -> None:
            group, actor, batch = trains.pop(call)
            busy[group] -= 1
            try:
                reports = ray.get(call)
            except (RayActorError, RayTaskError) as error:
                if isinstance(getattr(error, "cause", None), FedrayError):
                    raise error.cause from None  # a configuration problem, not a failing hospital
                if isinstance(error, RayActorError):
                    actor_died(group, actor)
                for hospital in batch:
                    retry_or_drop(hospital, error)
                return
            for hospital, report in zip(batch, reports, strict=True):
                reported(group, actor, hospital, report)

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

        def finish() -> dict[str, int]:
            while trains or flushes:
                [task], _ = ray.wait([*trains, *flushes], num_returns=1)
                if task in trains:
                    trained(task)
                else:
                    summed(task)
                dispatch()
            for hid, retries in attempts.items():
                outcomes.setdefault(hid, ("", retries))
            self.outcomes, self.train_calls = outcomes, calls
            return {**counts, Metric.LATE.value: len(ledger.account.late)}

        dispatch()
        return RoundInFlight(chosen, ledger, finish, started)

    def _tell_steps_to(self) -> None:
        """Once the driver is watched, tell each actor (once, ahead of its next tasks) where to report steps."""
        if self.steps_to is None:
            return
        for group, actor in enumerate(self.actors):
            if group not in self._told:
                actor.report_steps_to.remote(self.steps_to)
                self._told.add(group)

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
        self._told.discard(group)  # a fresh actor is told again
        log.warning("hospital actor %d died; replaced it", group)
