"""Reproducibility record: versions, commit, seed and data checksums logged; --repro reruns and matches."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from fedray.cli import main
from fedray.tracking.mlflow import PLATFORMS_TAG
from fedray.tracking.provenance import compute_platform, platforms_label
from tests.conftest import tiny_study

pytestmark = pytest.mark.ray


def test_run_records_provenance_and_repro_matches(tmp_path, ray_local):
    study = tiny_study(tmp_path, rounds=2)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    assert main(["run", str(path)]) == 0
    run_dir = tmp_path / "results" / "tiny"

    manifest = json.loads((run_dir / "data_manifest.json").read_text())
    assert set(manifest["hospitals"]) == {"a", "b", "c"} and manifest["test"]
    client = MlflowClient(study["tracking"]["uri"])
    [run] = client.search_runs([client.get_experiment_by_name("fedray").experiment_id])
    tags = run.data.tags
    assert tags["data_manifest_sha256"] == manifest["study"]
    assert {"fedray_version", "torch_version", "monai_version", "ray_version", "git_commit", "seed"} <= set(tags)
    summary = json.loads((run_dir / "summary.json").read_text())
    [session] = summary["platforms"]  # the hospital actors' CPU, kernels and torch, from round 1
    assert session["from_round"] == 1 and session["platforms"] == [compute_platform(torch.device("cpu"))]
    assert tags[PLATFORMS_TAG] == platforms_label(summary["platforms"])

    assert main(["run", "--repro", str(run_dir)]) == 0  # every metric matches, bit for bit on CPU
    assert (tmp_path / "results" / "tiny__repro" / "rounds.csv").is_file()

    # a changed data file changes the checksum the rerun logs
    label = next((tmp_path / "data" / "phantom").glob("a-*/labelsTr/*.nii.gz"))
    label.write_bytes(label.read_bytes()[:-1] + bytes([label.read_bytes()[-1] ^ 1]))
    from fedray.config import config_from_data
    from fedray.data.federation import prepare_hospitals
    from fedray.tracking.provenance import files_sha256

    [hospital_a] = [h for h in prepare_hospitals(config_from_data(study)).hospitals if h.hospital_id == "a"]
    assert files_sha256(hospital_a.files) != manifest["hospitals"]["a"]
