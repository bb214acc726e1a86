"""Place hospitals on hospital actors: how many actors fit, which hospitals each hosts, their resources."""

from __future__ import annotations

import heapq
import math

import ray

from fedray.config import StudyConfig
from fedray.data.federation import Hospital
from fedray.errors import FedrayError
from fedray.simulation.worker import HospitalWorker


def actor_count(config: StudyConfig, n_hospitals: int) -> int:
    """resources.actors, or as many actors as the cluster's CPUs (and GPUs) hold, at most one per hospital."""
    res = config.resources
    if res.actors is not None:
        return min(res.actors, n_hospitals)
    available = ray.cluster_resources()
    fit = math.floor(available.get("CPU", 1) / res.cpus_per_actor + 1e-9)
    if res.gpus_per_actor > 0:
        if available.get("GPU", 0) < res.gpus_per_actor:
            raise FedrayError(
                f"resources.gpus_per_actor is {res.gpus_per_actor} but the Ray cluster has "
                f"{available.get('GPU', 0):g} GPUs. Set resources.gpus_per_actor=0 to train on CPUs."
            )
        fit = min(fit, math.floor(available.get("GPU", 0) / res.gpus_per_actor + 1e-9))
    return max(1, min(fit, n_hospitals))


def assign_hospitals(config: StudyConfig, hospitals: list[Hospital]) -> list[list[Hospital]]:
    """Spread hospitals over actors by expected cost (cases), largest first onto the least-loaded actor.

    Every step costs the same, so a hospital's cost is its case count (it bounds data loading; local
    steps per round are equal). Ties go to the lower actor index, so the plan is deterministic.
    """
    n_actors = actor_count(config, len(hospitals))
    loads = [(0, i) for i in range(n_actors)]
    plan: list[list[Hospital]] = [[] for _ in range(n_actors)]
    for hospital in sorted(hospitals, key=lambda h: (-h.num_cases, h.index)):
        load, i = heapq.heappop(loads)
        plan[i].append(hospital)
        heapq.heappush(loads, (load + hospital.num_cases, i))
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
