"""fedray export --bundle: MONAI's own bundle runner segments CT exactly as `fedray predict` does."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow, run

from fedray.config import config_from_data, with_absolute_paths
from fedray.data.federation import prepare_hospitals
from fedray.errors import ConfigError
from fedray.inference.bundle import export_bundle
from fedray.inference.predict import input_files, load_trained, segment
from fedray.simulation.launch import run_study
from fedray.organs import ORGANS
from tests.conftest import tiny_study

pytestmark = pytest.mark.ray

MULTIHEAD = {"name": "multihead_unet", "output": "sigmoid", "channels": [4, 8, 16], "norm_groups": 2}
CPU = "$torch.device('cpu')"  # as `segment` runs here, whatever the machine has


def train(tmp_path, name: str, **overrides):
    data = tiny_study(tmp_path, **overrides)
    # Resampled and cropped, so the way back to each input's grid is really exercised.
    data["data"]["preprocess"] = {"spacing": [9.0, 9.0, 9.0], "crop_foreground": True}
    data["tracking"] = {**data["tracking"], "run_name": name}
    config = with_absolute_paths(config_from_data(data))
    hospitals, test_dir = prepare_hospitals(config)
    return config, test_dir, run_study(config, hospitals, test_dir)


def reoriented_copy(source, path):
    """The same scan stored as ILA (axes permuted, two flipped), so the bundle's Orientationd does work."""
    image = nib.load(source)
    voxels = np.transpose(np.asarray(image.dataobj), (2, 0, 1))[::-1, ::-1, :].copy()
    affine = image.affine[:, [2, 0, 1, 3]].copy()
    for axis in (0, 1):
        affine[:, 3] += affine[:, axis] * (voxels.shape[axis] - 1)
        affine[:, axis] *= -1
    nib.save(nib.Nifti1Image(voxels, affine), path)
    assert nib.aff2axcodes(affine) == ("I", "L", "A")
    return path


def run_bundle(bundle, inputs, out_dir):
    """The bundle through MONAI's ConfigWorkflow (what `python -m monai.bundle run` builds)."""
    workflow = ConfigWorkflow(
        config_file=str(bundle / "configs" / "inference.json"), meta_file=str(bundle / "configs" / "metadata.json"),
        workflow_type="infer", logging_file=False,
        bundle_root=str(bundle), dataset_dir=str(inputs), output_dir=str(out_dir), device=CPU,
    )
    workflow.initialize()
    assert workflow.check_properties() == []  # MONAI's required inference ids are all there
    workflow.run()
    workflow.finalize()


def assert_same_as_predict(trained, source, written_path, predicts_organs=True):
    written, image = nib.load(written_path), nib.load(source)
    assert written.shape == image.shape and written.get_data_dtype() == np.uint8
    assert np.allclose(written.affine, image.affine)
    labels = np.asarray(written.dataobj)
    expected = segment(trained, source)
    assert np.array_equal(labels, expected), f"{int((labels != expected).sum())} voxels differ"
    if predicts_organs:
        assert len(np.unique(expected)) > 1  # a real label map, not all background


@pytest.fixture(scope="module")
def fedavg_bundle(tmp_path_factory, ray_local):
    tmp_path = tmp_path_factory.mktemp("fedavg")
    config, test_dir, summary = train(tmp_path, "fedavg")
    return config, test_dir, summary, export_bundle(config.run_dir, tmp_path / "bundle")


def test_monai_runs_the_bundle_to_the_label_maps_of_fedray_predict(fedavg_bundle, tmp_path):
    config, test_dir, _, bundle = fedavg_bundle
    trained = load_trained(config.run_dir)
    inputs = input_files(test_dir / "imagesTr")
    # MONAI's own `run` (the CLI's function) on the whole test folder
    run(
        config_file=str(bundle / "configs" / "inference.json"), meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=False,
        bundle_root=str(bundle), dataset_dir=str(test_dir / "imagesTr"), output_dir=str(tmp_path / "out"), device=CPU,
    )
    # This two-round softmax model gives no organ a probability above 0.5 (the labelling rule), so its
    # maps are background: the rule itself is checked on hand-made logits below, the geometry here.
    for source in inputs:  # OUT/<name>_seg.nii.gz
        written = tmp_path / "out" / f"{source.name.removesuffix('.nii.gz')}_seg.nii.gz"
        assert_same_as_predict(trained, source, written, predicts_organs=False)
    # A file stored in another orientation: resampled at nearest-neighbour ties where MONAI's Invertd,
    # undoing each step in turn, would pick the other voxel (1172 of them here).
    moved = reoriented_copy(inputs[0], tmp_path / "ila.nii.gz")
    run_bundle(bundle, moved, tmp_path / "out2")
    assert_same_as_predict(trained, moved, tmp_path / "out2" / "ila_seg.nii.gz", predicts_organs=False)


@pytest.mark.parametrize("output", ["softmax", "sigmoid"])
def test_the_bundles_labelling_is_fedrays_rule(output):
    from fedray.inference.bundle import labels_config
    from fedray.training.evaluate import logits_to_labels

    torch.manual_seed(0)
    logits = 3.0 * torch.randn(len(ORGANS) + (output == "softmax"), 6, 5, 4) - 4.0 * (output == "sigmoid")
    expected = logits_to_labels(logits[None], output)
    labels = eval(labels_config(output)["func"].removeprefix("$"))(logits)[0]  # the bundle's expression
    assert torch.equal(labels, expected[0])
    assert len(torch.unique(expected)) > 2 and (expected == 0).any()  # organs and background both occur


def test_the_bundle_files_describe_the_network_the_study_and_its_dice(fedavg_bundle):
    config, test_dir, summary, bundle = fedavg_bundle
    trained = load_trained(config.run_dir)
    weights = torch.load(bundle / "models" / "model.pt", weights_only=True)
    reference = trained.model.state_dict()
    assert weights.keys() == reference.keys() and all(torch.equal(weights[k], reference[k]) for k in weights)
    inference = json.loads((bundle / "configs" / "inference.json").read_text())
    assert inference["network_def"]["_target_"] == "monai.networks.nets.UNet"
    standard = {"network_def", "network", "preprocessing", "dataset", "inferer", "postprocessing", "evaluator", "run"}
    assert standard <= inference.keys()
    assert not any("fedray" in json.dumps(inference[k]) for k in inference)  # MONAI alone runs a UNet bundle

    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    for key in ("version", "monai_version", "pytorch_version", "numpy_version", "required_packages_version",
                "task", "description", "authors", "copyright", "network_data_format", "intended_use"):
        assert meta[key], key
    assert "fedray" not in meta["required_packages_version"]
    channels = meta["network_data_format"]["outputs"]["pred"]["channel_def"]
    assert channels == {"0": "background", **{str(k + 1): o for k, o in enumerate(config.data.organs)}}
    assert meta["eval_metrics"]["mean_dice"] == summary["dice/mean"]
    study = meta["fedray"]
    assert (study["study"], study["method"]["name"], study["rounds"], study["seed"]) == ("tiny", "fedavg", 2, 0)
    assert study["test_set"] == {"path": str(test_dir), "volumes": 2}

    readme = (bundle / "docs" / "README.md").read_text()
    assert "`tiny`" in readme and "`fedavg`" in readme and "pooled over all test volumes" in readme
    assert f"| liver | {summary['dice/liver']:.4f} |" in readme and f"**{summary['dice/mean']:.4f}**" in readme
    assert "python -m monai.bundle run" in readme and "not fedray" in readme
    assert "| a | 2 | liver, spleen, kidney_left |" in readme


def test_export_replaces_its_bundle_and_refuses_another_folder(fedavg_bundle, tmp_path):
    config, _, _, _ = fedavg_bundle
    out = export_bundle(config.run_dir, tmp_path / "b")
    (out / "docs" / "stale.txt").write_text("from before")
    export_bundle(config.run_dir, out, round_index=None)
    assert not (out / "docs" / "stale.txt").exists() and (out / "models" / "model.pt").is_file()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a bundle folder"):
        export_bundle(config.run_dir, tmp_path / "other")
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


@pytest.mark.slow  # minutes: local-only's ensemble is also covered by tests/tracking/test_model_logging.py
def test_a_local_only_bundle_runs_its_per_organ_ensemble_through_monai(tmp_path, ray_local):
    config, test_dir, summary = train(tmp_path, "local", model=MULTIHEAD, method={"name": "local"})
    bundle = export_bundle(config.run_dir, tmp_path / "bundle")
    inference = json.loads((bundle / "configs" / "inference.json").read_text())
    network = inference["network_def"]
    assert network["_target_"] == "fedray.models.ensemble.OrganEnsemble"
    assert {m["_target_"] for m in network["models"]} == {"fedray.models.multihead.MultiHeadUNet3D"}
    assert sorted(organ for _, organ in network["picks"]) == list(range(len(config.data.organs)))
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert "fedray" in meta["required_packages_version"]
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"]["0"] == config.data.organs[0]
    source = input_files(test_dir / "imagesTr")[0]
    run_bundle(bundle, source, tmp_path / "out")
    assert_same_as_predict(load_trained(config.run_dir), source, tmp_path / "out" / "test_000_seg.nii.gz")
