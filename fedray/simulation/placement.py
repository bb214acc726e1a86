"""Place hospitals on hospital actors: how many actors fit, which hospitals each hosts, their resources."""

from __future__ import annotations

import heapq
import math

import ray

from fedray.config import StudyConfig
from fedray.data.federation import Hospital
from fedray.errors import FedrayError
from fedray.simulation.worker import HospitalWorker


def actor_count(config: StudyConfig, n_hospitals: int, available: dict[str, float]) -> int:
    """resources.actors, or as many actors as the cluster's CPUs (and GPUs) hold, at most one per hospital."""
    res = config.resources
    fit = math.floor(available.get("CPU", 0) / res.cpus_per_actor + 1e-9)
    if res.gpus_per_actor > 0:
        fit = min(fit, math.floor(available.get("GPU", 0) / res.gpus_per_actor + 1e-9))
    wanted = min(res.actors or fit, n_hospitals)
    if fit < 1 or wanted > fit:
        raise FedrayError(
            f"{max(wanted, 1)} hospital actors with {res.cpus_per_actor:g} CPUs and {res.gpus_per_actor:g} GPUs "
            f"each do not fit the Ray cluster ({available.get('CPU', 0):g} CPUs, {available.get('GPU', 0):g} GPUs): "
            "lower resources.actors, cpus_per_actor or gpus_per_actor (0 trains on CPUs)."
        )
    return wanted


def assign_hospitals(
    config: StudyConfig, hospitals: list[Hospital], available: dict[str, float]
) -> list[list[Hospital]]:
    """Spread hospitals over actors by expected cost, largest first onto the least-loaded actor.

    A hospital's round costs `train.local_steps` steps whatever its size, so actors are balanced by
    the local steps they run per round, then by cases (data held in memory). Ties go to the lower
    actor index, so the plan is deterministic.
    """
    n_actors = actor_count(config, len(hospitals), available)
    steps = config.train.local_steps
    loads = [(0, 0, i) for i in range(n_actors)]
    plan: list[list[Hospital]] = [[] for _ in range(n_actors)]
    for hospital in sorted(hospitals, key=lambda h: (-h.num_cases, h.index)):
        step_load, case_load, i = heapq.heappop(loads)
        plan[i].append(hospital)
        heapq.heappush(loads, (step_load + steps, case_load + hospital.num_cases, i))
    return [hosted for hosted in plan if hosted]


def actor_name(config: StudyConfig, group: int, generation: int = 0) -> str:
    """Ray name of a study's hospital actor (for debugging, the dashboard and fault tests).

    Replacements of a dead actor get a generation suffix: Ray keeps a dead actor's name a while.
    """
    return f"{config.run_name}/hospitals-{group}" + (f"-r{generation}" if generation else "")


def create_hospital_actors(
    config: StudyConfig, plan: list[list[Hospital]], groups: list[int] | None = None, generation: int = 0
) -> list[tuple[object, list[Hospital]]]:
    """Start one named HospitalWorker actor per group, with the configured CPUs and (fractional) GPUs.

    `groups` gives the group numbers of `plan` (default 0..n-1); `generation` counts replacements.
    """
    res = config.resources
    remote = ray.remote(HospitalWorker)
    threads = max(1, int(res.cpus_per_actor))
    return [
        (
            remote.options(
                num_cpus=res.cpus_per_actor, num_gpus=res.gpus_per_actor, name=actor_name(config, group, generation)
            ).remote(config, hosted, threads, res.gpus_per_actor),
            hosted,
        )
        for group, hosted in zip(groups or range(len(plan)), plan)
    ]
