"""A small sweep run inside the test (real Ray, MLflow, NIfTI), resumed, and the report checked against it."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from fedray.cli import main
from tests.conftest import tiny_study

pytestmark = pytest.mark.ray


def test_sweep_runs_resumes_and_reports(tmp_path, ray_local):
    study = tiny_study(tmp_path, rounds=2)
    study_path = tmp_path / "study.yaml"
    study_path.write_text(yaml.safe_dump(study))
    unweighted = tmp_path / "unweighted.yaml"
    unweighted.write_text(yaml.safe_dump({"method": {"name": "fedavg", "params": {"weighted": False}}}))
    sweep_path = tmp_path / "sweep.yaml"
    sweep_path.write_text(
        yaml.safe_dump(
            {
                "name": "mini",
                "study": str(study_path),
                "overrides": ["train.local_steps=1"],
                "variants": [
                    {"label": "weighted"},
                    {"label": "unweighted", "fragments": [str(unweighted)]},
                ],
                "seeds": [0, 1],
            }
        )
    )
    assert main(["sweep", str(sweep_path)]) == 0

    uri = study["tracking"]["uri"]
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("mini")
    runs = client.search_runs([experiment.experiment_id])
    parent = [r for r in runs if r.data.tags.get("role") == "sweep"]
    cells = [r for r in runs if r.data.tags.get("role") == "study"]
    assert len(parent) == 1 and len(cells) == 4
    assert all(r.data.tags["mlflow.parentRunId"] == parent[0].info.run_id for r in cells)

    # resume: finished cells are skipped, nothing new is logged
    assert main(["sweep", str(sweep_path)]) == 0
    assert len(client.search_runs([experiment.experiment_id])) == 5

    out = tmp_path / "report"
    assert main(["report", "--experiment", "mini", "--tracking-uri", uri, "--out", str(out), "--reference", "weighted"]) == 0
    summary = pd.read_csv(out / "summary.csv", index_col=0)
    results = tmp_path / "results"
    for variant in ("weighted", "unweighted"):
        finals = [json.loads((results / f"mini__{variant}__s{s}" / "summary.json").read_text())["dice/mean"] for s in (0, 1)]
        assert summary.loc[variant, "dice/mean mean"] == pytest.approx(sum(finals) / 2)
        assert summary.loc[variant, "seeds"] == 2
    paired = pd.read_csv(out / "paired.csv")
    assert paired["comparison"].tolist() == ["weighted - unweighted"]
    text = (out / "report.md").read_text()
    assert "| weighted |" in text and "| unweighted |" in text and "Wilcoxon" in text
    for name in ("dice_per_organ", "dice_vs_round", "dice_vs_communication", "inference_and_parameters"):
        png = out / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        assert f"({name}.png)" in text
