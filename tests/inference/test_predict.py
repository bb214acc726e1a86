"""fedray predict: a study's model segments new CT in the input's grid, as the study's evaluation scored it."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from fedray.cli import main
from fedray.config import config_from_data, with_absolute_paths
from fedray.data.federation import prepare_hospitals
from fedray.errors import ConfigError, DataError
from fedray.inference.predict import input_files, load_trained, pooled_dice, predict_files
from fedray.simulation.launch import run_study
from fedray.tracking.checkpoint import checkpoint_path, load_checkpoint
from fedray.tracking.client_store import ClientStateStore
from tests.conftest import TINY_MULTIHEAD, BestAtRound, tiny_study, train_tiny_study

pytestmark = pytest.mark.ray





@pytest.fixture(scope="module")
def fedavg_run(tmp_path_factory, ray_local):
    tmp_path = tmp_path_factory.mktemp("fedavg")
    data = tiny_study(tmp_path, rounds=2)
    data["data"]["preprocess"] = {"spacing": [9.0, 9.0, 9.0]}  # resampled, so mapping back is exercised
    data["tracking"] = {**data["tracking"], "run_name": "fedavg", "keep_every": 1}
    config = with_absolute_paths(config_from_data(data))
    hospitals, test_dir = prepare_hospitals(config)
    return config, test_dir, run_study(config, hospitals, test_dir)


def test_predicting_the_test_set_gives_the_studys_final_dice_in_each_inputs_grid(fedavg_run, tmp_path):
    config, test_dir, summary = fedavg_run
    trained = load_trained(config.run_dir)
    assert trained.round == 2
    inputs = input_files(test_dir / "imagesTr")
    results = predict_files(trained, inputs, tmp_path / "out")
    assert all(r.error is None for r in results)
    assert pooled_dice({r.input.name: r.output for r in results}, config)["mean"] == summary["dice/mean"]  # exactly
    source, written = nib.load(inputs[0]), nib.load(results[0].output)
    assert written.shape == source.shape and np.allclose(written.affine, source.affine)
    assert written.get_data_dtype() == np.uint8
    names = json.loads((tmp_path / "out" / "labels.json").read_text())
    assert names["0"] == "background" and names["1"] == config.data.organs[0]
    assert set(results[0].voxels) == set(config.data.organs)


def test_a_kept_round_can_be_chosen_and_a_missing_one_is_refused(fedavg_run):
    config, _, _ = fedavg_run
    first = load_trained(config.run_dir, round_index=1)
    last = load_trained(config.run_dir)
    assert first.round == 1
    assert any(not torch.equal(a, b) for a, b in zip(first.model.state_dict().values(), last.model.state_dict().values()))
    with pytest.raises(ConfigError, match="round_000001.npz"):
        load_trained(config.run_dir, round_index=7)
    best = load_trained(config.run_dir, round_index="best")
    summary = json.loads((config.run_dir / "summary.json").read_text())
    assert best.round == summary["best_round"] and summary["dice/mean_best"] >= summary["dice/mean"]


def test_bad_inputs_are_reported_by_name_and_the_others_still_segmented(fedavg_run, tmp_path):
    config, test_dir, _ = fedavg_run
    good = input_files(test_dir / "imagesTr")[0]
    image = nib.load(good)
    folder = tmp_path / "in"
    folder.mkdir()
    voxels = np.asarray(image.dataobj, dtype=np.float32)
    nib.save(nib.Nifti1Image(np.stack([voxels, voxels], -1), image.affine), folder / "a_series.nii.gz")
    voxels_nan = voxels.copy()
    voxels_nan[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(voxels_nan, image.affine), folder / "b_nan.nii.gz")
    (folder / "c_broken.nii.gz").write_bytes(b"not a nifti")
    nib.save(image, folder / "d_good.nii.gz")
    results = predict_files(load_trained(config.run_dir), input_files(folder), tmp_path / "out")
    errors = {r.input.name: r.error for r in results}
    assert "4-D" in errors["a_series.nii.gz"] and "a_series.nii.gz" in errors["a_series.nii.gz"]
    assert "NaN" in errors["b_nan.nii.gz"] and "cannot be read" in errors["c_broken.nii.gz"]
    assert errors["d_good.nii.gz"] is None and (tmp_path / "out" / "d_good.nii.gz").is_file()
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .nii"):
        input_files(tmp_path / "empty")


def test_cli_predict_writes_label_maps_and_fails_on_a_bad_input(fedavg_run, tmp_path, capsys):
    config, test_dir, summary = fedavg_run
    assert main(["predict", str(config.run_dir), "--test-set", "--out", str(tmp_path / "t"), "--overlay"]) == 0
    assert f"{100 * summary['dice/mean']:.1f}" in capsys.readouterr().out  # the study's own final Dice
    outputs = {p.name: p for p in (tmp_path / "t").glob("*.nii.gz")}
    assert pooled_dice(outputs, config)["mean"] == summary["dice/mean"]
    assert len(list((tmp_path / "t").glob("*.png"))) == len(outputs) > 0
    good = input_files(test_dir / "imagesTr")[0]
    assert main(["predict", str(config.run_dir), "--input", str(good), "--out", str(tmp_path / "o"),
                 "--device", "cpu", "--overlap", "0.5"]) == 0
    assert (tmp_path / "o" / good.name).is_file()
    assert main(["predict", str(config.run_dir), "--input", str(tmp_path / "missing.nii.gz"), "--out",
                 str(tmp_path / "o")]) == 2


def test_local_only_predicts_with_its_ensemble_at_its_last_and_its_best_round(tmp_path, ray_local):
    config, test_dir, summary = train_tiny_study(tmp_path, "local", rounds=3, model=TINY_MULTIHEAD, method={"name": "local"},
                                      tracking_extra={"keep_every": 1}, callbacks=(BestAtRound(1),))
    trained = load_trained(config.run_dir)
    outputs = [tmp_path / "o" / p.name for p in input_files(test_dir / "imagesTr")]
    predict_files(trained, input_files(test_dir / "imagesTr"), tmp_path / "o")
    assert pooled_dice({p.name: p for p in outputs}, config)["mean"] == summary["dice/mean"]
    assert type(trained.model).__name__ == "OrganEnsemble"
    assert summary["best_round"] == 1
    best = load_trained(config.run_dir, round_index="best")  # its hospitals' round-1 models were kept
    owners = ClientStateStore(config.run_dir / "client_state")
    assert best.round == 1 and {owners.get(h, 2) is not None for h in ("a", "b", "c")} == {True}
    predict_files(best, input_files(test_dir / "imagesTr"), tmp_path / "best")
    best_dice = pooled_dice({p.name: p for p in (tmp_path / "best").glob("*.nii.gz")}, config)["mean"]
    assert best_dice == round_one_dice(config)
    with pytest.raises(ConfigError, match="no longer keeps"):
        load_trained(config.run_dir, round_index=2)  # neither the last nor the best: its states are pruned


@pytest.mark.slow  # another study; the default suite checks the same store mechanism with local-only
def test_fedbn_predicts_at_its_best_round_with_that_rounds_local_normalisation(tmp_path, ray_local):
    config, test_dir, summary = train_tiny_study(tmp_path, "fedbn", rounds=2, model=TINY_MULTIHEAD, method={"name": "fedbn"},
                                      callbacks=(BestAtRound(1),))
    best, last = load_trained(config.run_dir, round_index="best"), load_trained(config.run_dir)
    assert best.round == summary["best_round"] == 1 and last.round == 2
    assert any(not torch.equal(a, b) for a, b in zip(best.model.state_dict().values(), last.model.state_dict().values()))
    predict_files(best, input_files(test_dir / "imagesTr"), tmp_path / "best")
    best_dice = pooled_dice({p.name: p for p in (tmp_path / "best").glob("*.nii.gz")}, config)["mean"]
    assert best_dice == round_one_dice(config)


def round_one_dice(config) -> float:
    """Round 1's real dice/mean, as best.npz (written before BestAtRound raised it) recorded it."""
    return load_checkpoint(checkpoint_path(config.run_dir, "best")).meta["rows"][-1]["dice/mean"]


def test_cli_predicts_through_the_logged_mlflow_model_with_the_studys_dice(fedavg_run, tmp_path):
    config, _, summary = fedavg_run
    source = f"runs:/{summary['run_id']}/model"
    assert main(["predict", source, "--tracking-uri", config.tracking.uri, "--test-set", "--out", str(tmp_path / "m")]) == 0
    outputs = {p.name: p for p in (tmp_path / "m").glob("*.nii.gz")}
    assert pooled_dice(outputs, config)["mean"] == summary["dice/mean"]
    assert main(["predict", source, "--round", "1", "--test-set", "--out", str(tmp_path / "m")]) == 2


def test_cli_export_writes_a_monai_bundle(fedavg_run, tmp_path):
    config, _, _ = fedavg_run
    assert main(["export", str(config.run_dir), "--bundle", str(tmp_path / "bundle")]) == 0
    for name in ("configs/inference.json", "configs/metadata.json", "models/model.pt", "docs/README.md"):
        assert (tmp_path / "bundle" / name).is_file(), name
    assert main(["export", str(config.run_dir), "--bundle", str(tmp_path / "b2"), "--round", "9"]) == 2
