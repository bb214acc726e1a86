"""A local 3-node Ray cluster with fake GPUs: hospital actors spread over the nodes, the study completes."""

from __future__ import annotations

import os

import pytest

from fedray.config import config_from_data, with_absolute_paths
from fedray.data.federation import prepare_hospitals
from fedray.simulation.launch import run_study
from tests.conftest import tiny_study

pytestmark = pytest.mark.ray


@pytest.fixture
def three_nodes():
    """A head node (1 CPU, no GPU) and two workers with 1 CPU and 1 fake GPU each."""
    import secrets
    from pathlib import Path

    import ray
    from ray.cluster_utils import Cluster

    # Under token authentication nodes started by hand need a token. ray.init writes one to
    # ~/.ray/auth_token when it starts a local instance; on a fresh machine this may be the first
    # Ray here, so write it as ray.init would (an environment token would outlive this test in Ray's cache).
    token_file = Path.home() / ".ray" / "auth_token"
    if not any(os.environ.get(v) for v in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")) and not token_file.exists():
        token_file.parent.mkdir(parents=True, exist_ok=True)
        token_file.write_text(secrets.token_hex(32))
    if ray.is_initialized():  # the local instance other modules share (conftest's ray_local)
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    gpu_nodes = [cluster.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster, {node.node_id for node in gpu_nodes}
    ray.shutdown()
    cluster.shutdown()


def test_hospitals_spread_over_three_nodes_and_the_study_completes(tmp_path, three_nodes):
    import ray

    cluster, gpu_node_ids = three_nodes
    data = tiny_study(tmp_path, rounds=2)
    data["federation"]["hospitals"].append({"name": "big", "organs": ["liver", "spleen"], "cases": 3})
    data["resources"] = {
        "address": cluster.address,
        "actors": 2,
        "cpus_per_actor": 1,
        "hospitals": {"big": {"cpus": 1, "gpus": 1}},  # a whole (fake) GPU: only a worker node has one
        "placement": "STRICT_SPREAD",
    }
    config = with_absolute_paths(config_from_data(data))
    hospitals, test_dir = prepare_hospitals(config)
    summary = run_study(config, hospitals, test_dir)

    assert summary["rounds"] == 2
    placed = {tuple(actor["hospitals"]): actor["node_id"] for actor in summary["actors"]}
    assert len(set(placed.values())) == 3  # STRICT_SPREAD: one hospital actor per node
    assert placed[("big",)] in gpu_node_ids  # its whole (fake) GPU exists only on a worker node
    assert ray.util.placement_group_table() and all(
        pg["state"] == "REMOVED" for pg in ray.util.placement_group_table().values()
    )  # the study released its bundles
