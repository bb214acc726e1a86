"""Place hospitals on hospital actors: which hospitals each hosts, its resources, and where Ray puts it."""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import ray
from ray.exceptions import GetTimeoutError
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from fedray.config import StudyConfig
from fedray.data.federation import Hospital
from fedray.errors import ConfigError, FedrayError, did_you_mean
from fedray.simulation.actors import HospitalActor


@dataclass(frozen=True)
class ActorPlan:
    """One hospital actor: its home hospitals (whose data it loads) and its Ray resources."""

    hospitals: tuple[Hospital, ...]
    cpus: float
    gpus: float
    dedicated: bool = False  # one hospital with a resources override: it trains only there, and only it

    def bundle(self) -> dict[str, float]:
        """Its placement-group bundle."""
        return {"CPU": self.cpus, **({"GPU": self.gpus} if self.gpus else {})}


def check_resource_overrides(config: StudyConfig, hospitals: list[Hospital]) -> None:
    """Every `resources.hospitals` key must name a hospital of the study (did-you-mean otherwise)."""
    ids = [h.hospital_id for h in hospitals]
    for name in config.resources.hospitals:
        if name not in ids:
            raise ConfigError(
                f"resources.hospitals: no hospital is named '{name}'.{did_you_mean(name, ids)} "
                f"The study has {len(ids)} hospitals ({', '.join(ids[:5])}{', ...' if len(ids) > 5 else ''})."
            )


def actor_count(config: StudyConfig, n_hospitals: int, available: dict[str, float]) -> int:
    """resources.actors, or as many actors as the cluster's CPUs (and GPUs) hold, at most one per hospital."""
    res = config.resources
    fit = res.actors_fitting(available.get("CPU", 0), available.get("GPU", 0))
    wanted = min(res.actors or fit, n_hospitals)
    if fit < 1 or wanted > fit:
        raise FedrayError(
            f"{max(wanted, 1)} hospital actors with {res.cpus_per_actor:g} CPUs and {res.gpus_per_actor:g} GPUs "
            f"each do not fit the Ray cluster ({available.get('CPU', 0):g} CPUs, {available.get('GPU', 0):g} GPUs "
            "left for them): lower resources.actors, cpus_per_actor or gpus_per_actor (0 trains on CPUs), "
            "or the per-hospital overrides in resources.hospitals."
        )
    return wanted


def plan_actors(config: StudyConfig, hospitals: list[Hospital], available: dict[str, float]) -> list[ActorPlan]:
    """Hospitals with a resources override get an actor each; the rest share actors balanced by cost.

    A hospital's round costs `train.local_steps` steps whatever its size, so shared actors are balanced
    by the local steps they run per round, then by cases (data held in memory): largest first onto the
    least-loaded actor, ties to the lower index, so the plan is deterministic.
    """
    res = config.resources
    dedicated = [
        ActorPlan((h,), res.hospitals[h.hospital_id].cpus, res.hospitals[h.hospital_id].gpus, dedicated=True)
        for h in hospitals
        if h.hospital_id in res.hospitals
    ]
    shared = [h for h in hospitals if h.hospital_id not in res.hospitals]
    if not shared:
        return dedicated
    left = {
        "CPU": available.get("CPU", 0) - sum(p.cpus for p in dedicated),
        "GPU": available.get("GPU", 0) - sum(p.gpus for p in dedicated),
    }
    n_actors = actor_count(config, len(shared), left)
    steps = config.train.local_steps
    loads = [(0, 0, i) for i in range(n_actors)]
    groups: list[list[Hospital]] = [[] for _ in range(n_actors)]
    for hospital in sorted(shared, key=lambda h: (-h.num_cases, h.index)):
        step_load, case_load, i = heapq.heappop(loads)
        groups[i].append(hospital)
        heapq.heappush(loads, (step_load + steps, case_load + hospital.num_cases, i))
    return [ActorPlan(tuple(g), res.cpus_per_actor, res.gpus_per_actor) for g in groups if g] + dedicated


def placement_name(config: StudyConfig) -> str:
    """Ray name of a study's placement group."""
    return f"{config.run_name}/placement"


def reserve_placement(config: StudyConfig, plans: list[ActorPlan]) -> PlacementGroup:
    """One placement group with a bundle per hospital actor, placed by `resources.placement`.

    Reserving every bundle at once means a study starts with all its actors or not at all (two studies
    sharing a cluster never deadlock holding half their actors each).

    Raises:
        FedrayError: the cluster did not hold the bundles within `resources.placement_timeout_s`.
    """
    res = config.resources
    group = placement_group([p.bundle() for p in plans], strategy=res.placement, name=placement_name(config))
    try:
        ray.get(group.ready(), timeout=res.placement_timeout_s)
    except GetTimeoutError:
        remove_placement_group(group)
        cpus = sum(p.cpus for p in plans)
        gpus = sum(p.gpus for p in plans)
        raise FedrayError(
            f"The Ray cluster could not place {len(plans)} hospital actors ({cpus:g} CPUs, {gpus:g} GPUs in all, "
            f"strategy {res.placement}) within {res.placement_timeout_s:g} s; it has "
            f"{ray.available_resources().get('CPU', 0):g} CPUs and {ray.available_resources().get('GPU', 0):g} "
            "GPUs free. Free the cluster, ask for less (resources.*), or use PACK/SPREAD instead of STRICT_*."
        ) from None
    return group


def release_placement(config: StudyConfig) -> None:
    """Remove the study's placement group if it exists (idempotent; frees its bundles)."""
    try:
        remove_placement_group(ray.util.get_placement_group(placement_name(config)))
    except ValueError:
        pass  # none by that name: never reserved, or already released


@dataclass(frozen=True)
class HospitalActors:
    """Started hospital actors with their plans and placement group (actor i runs plans[i] in bundle i)."""

    plans: list[ActorPlan]
    placement: PlacementGroup
    actors: list


def start_hospital_actors(config: StudyConfig, hospitals: list[Hospital]) -> HospitalActors:
    """Plan the actors, reserve their placement group and start them, without waiting for them."""
    plans = plan_actors(config, hospitals, ray.cluster_resources())
    placement = reserve_placement(config, plans)
    return HospitalActors(plans, placement, [create_hospital_actor(config, p, placement, g) for g, p in enumerate(plans)])


def actor_name(config: StudyConfig, group: int, generation: int = 0) -> str:
    """Ray name of a study's hospital actor (for debugging, the dashboard and fault tests).

    Replacements of a dead actor get a generation suffix: Ray keeps a dead actor's name a while.
    """
    return f"{config.run_name}/hospitals-{group}" + (f"-r{generation}" if generation else "")


def create_hospital_actor(
    config: StudyConfig, plan: ActorPlan, placement: PlacementGroup, group: int, generation: int = 0
):
    """Start the named hospital actor of `group` in its bundle, with the plan's CPUs and (fractional) GPUs.

    The actor builds a HospitalWorker in its own process (`actors.HospitalActor`).
    """
    return (
        ray.remote(HospitalActor)
        .options(
            num_cpus=plan.cpus,
            num_gpus=plan.gpus,
            name=actor_name(config, group, generation),
            scheduling_strategy=PlacementGroupSchedulingStrategy(placement, placement_group_bundle_index=group),
        )
        .remote(config, max(1, int(plan.cpus)), plan.gpus)
    )
