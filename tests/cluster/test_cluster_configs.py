"""Offline checks of cluster/: launcher YAMLs against Ray's own schema, KubeRay manifest structure.

No network, no cloud credentials, no kubectl. The launcher check uses Ray's *private* autoscaler
API (`ray.autoscaler._private.util.prepare_config` / `validate_config`), so it pins the schema of
the Ray release the configs target (2.60); on another Ray release those tests skip, not guess.
`prepare_config` only merges the provider's bundled defaults.yaml (no cloud calls). It is needed:
`validate_config` on the raw dict fails because fields such as `cluster_synced_files` only appear
after the merge.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import ray
import yaml

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"
RAY_VERSION = "2.60.0"
IMAGE = f"rayproject/ray:{RAY_VERSION}-py311-gpu"
LAUNCHER_FILES = ["aws.yaml", "gcp.yaml"]

pinned_ray = pytest.mark.skipif(
    not ray.__version__.startswith("2.60."),
    reason=f"pins Ray 2.60's private autoscaler API (installed: {ray.__version__})",
)


def _launcher(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


def _prepared(config: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config

    return prepare_config(copy.deepcopy(config))


def _validate(config: dict) -> None:
    from ray.autoscaler._private.util import validate_config

    validate_config(config)


def _kuberay_docs() -> list[dict]:
    return [doc for doc in yaml.safe_load_all((CLUSTER / "kuberay.yaml").read_text()) if doc]


def _raycluster() -> dict:
    (cluster,) = [doc for doc in _kuberay_docs() if doc.get("kind") == "RayCluster"]
    return cluster


def _groups(cluster: dict) -> list[dict]:
    return [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"]]


# --- cluster launcher (AWS / GCP) ------------------------------------------------------------


@pinned_ray
@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_launcher_config_passes_rays_schema(name):
    _validate(_prepared(_launcher(name)))


@pinned_ray
@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_schema_rejects_unknown_keys(name):
    """The same validator can fail: a misspelt top-level key and a misspelt docker key."""
    import jsonschema

    bad_top = _launcher(name)
    bad_top["max_worker"] = 4
    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        _validate(_prepared(bad_top))

    bad_docker = _launcher(name)
    bad_docker["docker"]["imagee"] = IMAGE
    with pytest.raises(jsonschema.ValidationError, match="imagee"):
        _validate(_prepared(bad_docker))


@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_launcher_layout(name):
    config = _launcher(name)
    assert config["docker"]["image"] == IMAGE
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}, "no hospital actors on the head"
    workers = [t for key, t in types.items() if key != config["head_node_type"]]
    assert len(workers) == 1
    (worker,) = workers
    assert 0 <= worker["min_workers"] <= worker["max_workers"] <= config["max_workers"]
    if config["provider"]["type"] == "gcp":
        assert worker["resources"]["GPU"] >= 1  # GCP does not detect GPUs itself
        assert worker["node_config"]["guestAccelerators"][0]["acceleratorCount"] == 1
    else:
        assert worker["node_config"]["InstanceType"].startswith("g5.")


@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_launcher_token_auth_and_private_dashboard(name):
    config = _launcher(name)
    # The locally generated token goes to every node (Ray's token-auth guide for `ray up`).
    assert config["file_mounts"]["/home/ray/.ray/auth_token"] == "~/.ray/auth_token"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = [c for c in config[key] if "ray start" in c]
        assert start and all("RAY_AUTH_MODE=token ray start" in c for c in start), key
    assert any("export RAY_AUTH_MODE=token" in c for c in config["setup_commands"])
    (head_start,) = [c for c in config["head_start_ray_commands"] if "ray start" in c]
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head_start


@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_launcher_installs_fedray_and_shares_data_path(name):
    config = _launcher(name)
    assert config["file_mounts"]["/home/ray/fedray"] == "."
    assert "pip install -e /home/ray/fedray" in config["setup_commands"]
    # The shared mount appears at the same path inside every container.
    assert "--volume=/mnt/shared:/mnt/shared" in config["docker"]["run_options"]


# --- KubeRay ---------------------------------------------------------------------------------


def test_kuberay_is_a_raycluster_with_token_auth():
    cluster = _raycluster()
    assert cluster["apiVersion"] == "ray.io/v1"
    assert cluster["kind"] == "RayCluster"
    assert cluster["spec"]["rayVersion"] == RAY_VERSION
    assert cluster["spec"]["authOptions"] == {"mode": "token"}


def test_kuberay_image_matches_ray_version():
    cluster = _raycluster()
    version = cluster["spec"]["rayVersion"]
    for group in _groups(cluster):
        for container in group["template"]["spec"]["containers"]:
            tag = container["image"].rsplit(":", 1)[1]
            assert re.search(rf"(^|ray){re.escape(version)}(-|$)", tag), container["image"]
    # The image is built from cluster/Dockerfile on the Ray image of the same version.
    assert f"FROM rayproject/ray:{version}-py311-gpu" in (CLUSTER / "Dockerfile").read_text()


def test_kuberay_ray_start_params_are_strings():
    cluster = _raycluster()
    for group in _groups(cluster):
        params = group.get("rayStartParams") or {}
        assert all(isinstance(v, str) for v in params.values()), params
    assert cluster["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"


def test_kuberay_workers_request_a_gpu():
    (worker,) = _raycluster()["spec"]["workerGroupSpecs"]
    assert worker["minReplicas"] <= worker["replicas"] <= worker["maxReplicas"]
    (container,) = worker["template"]["spec"]["containers"]
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) == 1


def test_kuberay_shared_pvc_at_same_path_and_mlflow_server():
    docs = _kuberay_docs()
    (pvc,) = [doc for doc in docs if doc.get("kind") == "PersistentVolumeClaim"]
    assert pvc["apiVersion"] == "v1" and "ReadWriteMany" in pvc["spec"]["accessModes"]
    cluster = _raycluster()
    mounts = set()
    for group in _groups(cluster):
        spec = group["template"]["spec"]
        claims = {
            v["name"]: v["persistentVolumeClaim"]["claimName"]
            for v in spec["volumes"]
            if "persistentVolumeClaim" in v
        }
        assert pvc["metadata"]["name"] in claims.values()
        for container in spec["containers"]:
            mounts |= {m["mountPath"] for m in container["volumeMounts"] if claims.get(m["name"])}
    assert mounts == {"/mnt/shared"}
    (head,) = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in head.get("env", [])}
    assert env["MLFLOW_TRACKING_URI"].startswith("http://")


# --- all configs -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*LAUNCHER_FILES, "kuberay.yaml"])
def test_every_config_turns_on_token_auth(name):
    text = (CLUSTER / name).read_text()
    assert "RAY_AUTH_MODE=token" in text or re.search(r"authOptions:\s*\n\s*mode:\s*token", text)


def test_readme_overrides_are_valid_fedray_config():
    """The `key=value` overrides used in cluster/README.md load against a real study config."""
    from fedray.config import load_config

    config = load_config(
        CLUSTER.parent / "configs" / "quickstart.yaml",
        [
            "resources.address=auto",
            "resources.gpus_per_actor=0.25",
            "data.cache_dir=/mnt/shared/fedray/data",
            "tracking.results_dir=/home/ray/results",
        ],
    )
    assert config.resources.address == "auto" and config.resources.gpus_per_actor == 0.25
