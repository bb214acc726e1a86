"""Start a private local Ray instance or join a running cluster (imports Ray only, so it starts quickly)."""

from __future__ import annotations

import logging
import os

import ray

from fedray.config import ResourcesConfig


def init_ray(resources: ResourcesConfig) -> bool:
    """Join `resources.address` or RAY_ADDRESS, else start a private local instance; True if we started it.

    A local instance binds its dashboard to 127.0.0.1 and keeps Ray's default token authentication.
    """
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = resources.address or os.environ.get("RAY_ADDRESS") or "local"
    kwargs: dict = {"log_to_driver": False, "include_dashboard": resources.dashboard}
    if not os.environ.get("FEDRAY_VERBOSE"):  # `fedray --verbose` shows Ray's start-up INFO/WARNING lines
        kwargs["logging_level"] = logging.ERROR
    if resources.dashboard:
        kwargs["dashboard_host"] = "127.0.0.1"
    if address == "local":
        kwargs.update(num_cpus=resources.num_cpus, num_gpus=resources.num_gpus)
    ray.init(address=address, **kwargs)
    return True


def shutdown_ray() -> None:
    """Stop the Ray instance this process started or joined."""
    ray.shutdown()


def cluster_resources() -> dict[str, float]:
    """The resources of the Ray cluster this process is connected to (CPU, GPU, memory...)."""
    return ray.cluster_resources()


def ray_version() -> str:
    """The installed Ray's version."""
    return ray.__version__
