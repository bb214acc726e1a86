"""End to end on real-layout data: three sites numbering labels differently, one bad case skipped."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from fedray.config import config_from_data, with_absolute_paths
from fedray.data.federation import prepare_hospitals
from fedray.data.phantom import PhantomSpec, write_site, write_test_set
from fedray.organs import organ_label
from fedray.simulation.launch import run_study

pytestmark = pytest.mark.ray

SPEC = PhantomSpec(shape=(32, 32, 32), spacing=(12.0, 10.0, 7.5))


def renumber(folder: Path, values: dict[str, int], names: dict[int, str]) -> None:
    """Give a phantom site its own label numbering (values per organ) and dataset.json names."""
    manifest = json.loads((folder / "dataset.json").read_text())
    for case in manifest["training"]:
        path = folder / case["label"]
        volume = nib.load(path)
        old = np.asarray(volume.dataobj)
        new = np.zeros_like(old)
        for organ, value in values.items():
            new[old == organ_label(organ)] = value
        nib.save(nib.Nifti1Image(new, volume.affine), path)
    manifest["labels"] = {"0": "background", **{str(v): n for v, n in names.items()}}
    (folder / "dataset.json").write_text(json.dumps(manifest))


def test_three_differently_numbered_sites_run_and_report_under_global_names(tmp_path, ray_local):
    root = tmp_path / "sites"
    a = write_site(root / "hospital_a", ["liver", "spleen"], 2, seed=1, site_index=0, spec=SPEC)
    b = write_site(root / "hospital_b", ["liver", "kidney_left"], 3, seed=1, site_index=1, spec=SPEC)
    c = write_site(root / "hospital_c", ["spleen", "kidney_left"], 2, seed=1, site_index=2, spec=SPEC)
    test = write_test_set(root / "test", 2, seed=1, spec=SPEC)
    renumber(a, {"liver": 2, "spleen": 1}, {2: "liver", 1: "spleen"})  # names in dataset.json
    renumber(b, {"liver": 7, "kidney_left": 3}, {7: "Liver", 3: "Kidney (L)"})  # names fedray can't read...
    renumber(c, {"spleen": 5, "kidney_left": 9}, {5: "spleen", 9: "kidney_left"})
    corrupt = (b / json.loads((b / "dataset.json").read_text())["training"][0]["image"]).resolve()
    corrupt.write_bytes(b"\x1f\x8b not a NIfTI")  # one corrupt image

    config = with_absolute_paths(
        config_from_data(
            {
                "name": "real",
                "rounds": 2,
                "data": {
                    "source": "msd",
                    "sites": [
                        str(a),
                        {"path": str(b), "labels": {7: "liver", 3: "kidney_left"}},  # ...so the config maps them
                        str(c),
                    ],
                    "test_set": str(test),
                    "organs": ["liver", "spleen", "kidney_left"],
                    "on_bad_case": "skip",
                    "patch_size": [16, 16, 16],
                },
                "model": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0},
                "train": {"local_steps": 2, "batch_size": 1},
                "eval": {"roi_size": [16, 16, 16], "sw_batch_size": 2},
                "resources": {"cpus_per_actor": 0.5},
                "tracking": {"results_dir": str(tmp_path / "results"), "uri": f"sqlite:///{tmp_path}/mlflow.db"},
            }
        )
    )
    prepared = prepare_hospitals(config)
    assert [h.hospital_id for h in prepared.hospitals] == ["hospital_a", "hospital_b", "hospital_c"]
    assert [h.num_cases for h in prepared.hospitals] == [2, 2, 2]  # b lost its corrupt case
    summary = run_study(
        config, prepared.hospitals, prepared.test_dir, skipped=tuple(s.as_dict() for s in prepared.skipped)
    )

    for organ in ("liver", "spleen", "kidney_left"):  # reported under the global names
        assert 0.0 <= summary[f"dice/{organ}"] <= 1.0
    assert "dice/kidney_right" not in summary
    [skipped] = summary["skipped_cases"]
    assert skipped["site"] == "hospital_b" and Path(skipped["file"]).resolve() == corrupt
    run = MlflowClient(config.tracking.uri).get_run(summary["run_id"])
    assert run.data.tags["skipped_cases"] == "1" and skipped["case"] in run.data.tags["skipped_cases_list"]
    assert (config.run_dir / "skipped_cases.json").is_file()
