"""The study's model in MLflow: a code-based pyfunc (nothing pickled) that segments NIfTI files as the
study's evaluation did, loadable in a process that imports no more of fedray than the loader."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import mlflow
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from fedray.config import config_from_data, with_absolute_paths
from fedray.data.datasets import load_folder
from fedray.data.federation import prepare_hospitals
from fedray.errors import ConfigError
from fedray.inference.predict import input_files, load_trained, segment
from fedray.metrics.segmentation import confusion_counts, dice_from_counts, mean_dice
from fedray.simulation.launch import run_study
from fedray.tracking import pyfunc_model
from fedray.tracking.callbacks import RunContext
from fedray.tracking.checkpoint import checkpoint_path, load_checkpoint
from fedray.tracking.model_logging import STUDY_ARTIFACT, ModelLoggingCallback, load_logged_study, log_study_model
from tests.conftest import TINY_MULTIHEAD, BestAtRound, tiny_study, train_tiny_study
from tests.test_layering import MODULES, imports

pytestmark = pytest.mark.ray

REGISTERED = "tiny-fedavg"




def pooled_dice(outputs, config, test_dir) -> float:
    cases = load_folder(test_dir, config.data.organs, config.data.hu_window, preprocess=config.data.preprocess)
    n = len(config.data.organs)
    counts = np.zeros((n, 3), dtype=np.int64)
    for output, case in zip(outputs, cases, strict=True):
        predicted = torch.as_tensor(np.asarray(nib.load(output).dataobj)).long()
        counts += confusion_counts(predicted, case["original_label"][0].long(), n)
    return mean_dice(dice_from_counts(counts))


def logged_models(uri: str, run_id: str, name: str) -> list:
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_run(run_id).info.experiment_id
    return [m for m in client.search_logged_models([experiment], filter_string=f"name = '{name}'")
            if m.source_run_id == run_id]


@pytest.fixture(scope="module")
def fedavg_run(tmp_path_factory, ray_local):
    tmp_path = tmp_path_factory.mktemp("fedavg")
    data = tiny_study(tmp_path, rounds=2)
    data["data"]["preprocess"] = {"spacing": [9.0, 9.0, 9.0]}  # resampled, so mapping back is exercised
    data["tracking"] = {**data["tracking"], "run_name": "fedavg", "keep_every": 1, "register_as": REGISTERED}
    config = with_absolute_paths(config_from_data(data))
    hospitals, test_dir = prepare_hospitals(config)
    return config, test_dir, run_study(config, hospitals, test_dir)


@pytest.fixture
def tracking(fedavg_run, monkeypatch):
    """The study's tracking URI, as MLflow's default in this test (so `runs:/` URIs resolve)."""
    uri = fedavg_run[0].tracking.uri
    use_tracking_uri(monkeypatch, uri)
    return uri


def use_tracking_uri(monkeypatch, uri: str) -> None:
    """MLflow's default store for one test: the variable, and no URI an earlier test set in this
    process (mlflow.set_tracking_uri wins over the variable)."""
    from mlflow.tracking._tracking_service import utils

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setattr(utils, "_tracking_uri", None)


def test_the_run_has_the_final_model_and_each_kept_rounds_with_organs_and_preprocessing(fedavg_run, tracking):
    config, _, summary = fedavg_run
    run_id = summary["run_id"]
    info = mlflow.models.get_model_info(f"runs:/{run_id}/model")
    meta = info.metadata
    assert meta["organs"] == list(config.data.organs) and meta["round"] == config.rounds
    assert meta["labels"]["0"] == "background" and meta["labels"]["1"] == config.data.organs[0]
    assert meta["preprocessing"]["spacing"] == [9.0, 9.0, 9.0]
    assert meta["preprocessing"]["hu_window"] == list(config.data.hu_window)
    assert meta["sliding_window"]["roi_size"] == [16, 16, 16] and meta["method"] == "fedavg"
    assert [c["name"] for c in info.signature.inputs.to_dict()] == ["image", "output"]
    assert "voxels/liver" in [c["name"] for c in info.signature.outputs.to_dict()]
    assert mlflow.models.get_model_info(f"runs:/{run_id}/model_round_1").metadata["round"] == 1
    assert len(logged_models(tracking, run_id, "model")) == 1
    assert len(logged_models(tracking, run_id, "model_round_2")) == 0  # the last round's is "model"
    run = MlflowClient(tracking_uri=tracking).get_run(run_id)
    assert run.info.status == "FINISHED" and "model_error" not in run.data.tags


def test_nothing_in_the_logged_model_is_a_pickle(fedavg_run, tracking, tmp_path):
    run_id = fedavg_run[2]["run_id"]
    local = Path(mlflow.artifacts.download_artifacts(f"runs:/{run_id}/model", dst_path=str(tmp_path)))
    files = [p for p in local.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in (".pkl", ".pickle", ".pt", ".pth", ".joblib")]
    flavour = yaml.safe_load((local / "MLmodel").read_text())["flavors"]
    assert set(flavour) == {"python_function"}  # no mlflow.pytorch flavour (a torch.save'd module)
    pyfunc = flavour["python_function"]
    assert pyfunc["loader_module"] == "mlflow.pyfunc.loaders.code_model" and "python_model" not in pyfunc
    assert (local / Path(pyfunc["model_code_path"]).name).read_text() == Path(pyfunc_model.__file__).read_text()
    study = local / pyfunc["artifacts"][STUDY_ARTIFACT]["path"]
    assert sorted(p.relative_to(study).as_posix() for p in study.rglob("*") if p.is_file()) == [
        "checkpoints/latest.npz", "config.resolved.yaml", "hospitals.json",  # FedAvg reads no client state
    ]
    for archive in [p for p in files if p.suffix == ".npz"]:
        with zipfile.ZipFile(archive) as z:
            assert all(name.endswith(".npy") for name in z.namelist())
        with np.load(archive, allow_pickle=False) as arrays:  # refuses object arrays
            assert all(arrays[k].dtype != object for k in arrays.files)
    assert pyfunc_model.STUDY_ARTIFACT == STUDY_ARTIFACT


def test_the_logged_model_can_be_built_from_its_data_files_alone(fedavg_run, tracking, tmp_path):
    config, _, summary = fedavg_run
    logged = load_logged_study(f"runs:/{summary['run_id']}/model", dst=tmp_path / "dl")
    trained = load_trained(config.run_dir)
    assert logged.round == trained.round and logged.run_dir.is_relative_to(tmp_path / "dl")
    ours, theirs = logged.model.state_dict(), trained.model.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert load_logged_study(f"models:/{REGISTERED}/1", dst=tmp_path / "registered").round == config.rounds


def test_a_fresh_process_loads_the_model_and_segments_as_the_study_does(fedavg_run, tracking, tmp_path):
    config, test_dir, summary = fedavg_run
    image = input_files(test_dir / "imagesTr")[0]
    code = (
        "import json, sys, mlflow, pandas as pd\n"
        f"model = mlflow.pyfunc.load_model('runs:/{summary['run_id']}/model')\n"
        f"out = model.predict(pd.DataFrame({{'image': [{str(image)!r}], 'output': [{str(tmp_path / 'out')!r}]}}))\n"
        "print(json.dumps({'rows': out.astype(object).where(out.notna(), None).to_dict('records'),\n"
        "                  'fedray': sorted(m for m in sys.modules if m.startswith('fedray')),\n"
        "                  'ray': 'ray' in sys.modules}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env={**os.environ, "MLFLOW_TRACKING_URI": tracking})
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    (row,) = report["rows"]
    assert row["error"] is None and Path(row["output"]) == tmp_path / "out" / image.name
    written = np.asarray(nib.load(row["output"]).dataobj)
    assert np.array_equal(written, segment(load_trained(config.run_dir), image))
    assert row["voxels/liver"] == int(np.count_nonzero(written == 1))

    assert not report["ray"]
    needed = _closure("fedray.inference.predict")  # what load_trained needs (and its lazily built method)
    extra = [m for m in report["fedray"] if m not in needed and not m.startswith(("fedray.strategies.", "fedray.models."))]
    assert extra == [], f"the loader imported more of fedray than load_trained needs: {extra}"
    assert not [m for m in report["fedray"] if m.startswith(("fedray.simulation", "fedray.cli", "fedray.tracking.mlflow"))]


def _closure(name: str) -> set[str]:
    """`name` and every fedray module it imports, directly or not (with their packages)."""
    seen, todo = set(), [name]
    while todo:
        module = todo.pop()
        if module in seen or module not in MODULES:
            continue
        seen.add(module)
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        todo += [m for m in imports(module) if m in MODULES]
    return seen


def test_the_mlflow_model_on_the_test_set_scores_the_studys_final_dice(fedavg_run, tracking, tmp_path):
    config, test_dir, summary = fedavg_run
    model = mlflow.pyfunc.load_model(f"runs:/{summary['run_id']}/model")
    images = input_files(test_dir / "imagesTr")
    out = model.predict(pd.DataFrame({"image": [str(p) for p in images]}))  # no output: a temporary folder
    assert out["error"].isna().all() and len(set(Path(o).parent for o in out["output"])) == 1
    assert json.loads((Path(out["output"][0]).parent / "labels.json").read_text())["1"] == config.data.organs[0]
    assert pooled_dice(list(out["output"]), config, test_dir) == summary["dice/mean"]  # exactly


def test_register_as_registers_the_final_model_once_and_a_resumed_end_logs_nothing_twice(fedavg_run, tracking):
    config, _, summary = fedavg_run
    client = MlflowClient(tracking_uri=tracking)
    (version,) = client.search_model_versions(f"name = '{REGISTERED}'")
    (final,) = logged_models(tracking, summary["run_id"], "model")
    assert version.run_id == summary["run_id"] and version.source == f"models:/{final.model_id}"
    # the end of a resumed study that had logged its model already: no second model, no new version
    checkpoint = load_checkpoint(checkpoint_path(config.run_dir))
    run = RunContext(config, [], config.run_dir, {}, run_id=summary["run_id"], snapshot=lambda: checkpoint)
    ModelLoggingCallback().on_run_end(run, "FINISHED", summary)
    assert len(logged_models(tracking, summary["run_id"], "model")) == 1
    assert len(client.search_model_versions(f"name = '{REGISTERED}'")) == 1


def test_a_model_that_cannot_be_logged_is_a_run_tag_not_a_failed_study(fedavg_run, tracking):
    config, _, summary = fedavg_run
    client = MlflowClient(tracking_uri=tracking)
    other = client.create_run(client.get_run(summary["run_id"]).info.experiment_id).info.run_id

    def broken():
        raise OSError("disk full")

    run = RunContext(config, [], config.run_dir, {}, run_id=other, snapshot=broken)
    ModelLoggingCallback().on_run_end(run, "FINISHED", summary)  # no exception: MlflowCallback still ends the run
    assert client.get_run(other).data.tags["model_error"] == "model: disk full"
    assert logged_models(tracking, other, "model") == []


def test_log_study_model_logs_a_kept_round_from_the_run_folder(fedavg_run, tracking):
    config, _, summary = fedavg_run
    info = log_study_model(config.run_dir, tracking, summary["run_id"], round_index=1)
    assert info.metadata["round"] == 1 and info.registered_model_version is None
    assert mlflow.get_tracking_uri() == os.environ["MLFLOW_TRACKING_URI"] == tracking  # left as it was
    assert len(logged_models(tracking, summary["run_id"], "model_round_1")) == 2  # a second, on request
    with pytest.raises(ConfigError, match="round_000007.npz"):
        log_study_model(config.run_dir, tracking, summary["run_id"], round_index=7)


def test_local_only_logs_its_ensemble_with_the_owners_states_and_the_model_scores_its_dice(tmp_path, ray_local, monkeypatch):
    config, test_dir, summary = train_tiny_study(tmp_path, "local", rounds=2, model=TINY_MULTIHEAD, method={"name": "local"},
                                      tracking_extra={"keep_every": 1}, callbacks=(BestAtRound(2),))
    use_tracking_uri(monkeypatch, config.tracking.uri)  # best = last: round 1's states are pruned
    uri = f"runs:/{summary['run_id']}/model"
    local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "dl")))
    states = sorted(p.relative_to(local / "artifacts" / STUDY_ARTIFACT / "client_state").as_posix()
                    for p in (local / "artifacts" / STUDY_ARTIFACT / "client_state").rglob("*.npz"))
    assert states == ["a/000002.npz", "b/000002.npz", "c/000002.npz"]  # each organ's owner, its last round
    model = mlflow.pyfunc.load_model(uri)
    assert type(model.unwrap_python_model().trained.model).__name__ == "OrganEnsemble"
    images = input_files(test_dir / "imagesTr")
    out = model.predict(pd.DataFrame({"image": [str(p) for p in images], "output": str(tmp_path / "o")}))
    assert pooled_dice(list(out["output"]), config, test_dir) == summary["dice/mean"]
    # round 1's ensemble was logged while its states existed; from the run folder it no longer can be
    assert mlflow.models.get_model_info(f"runs:/{summary['run_id']}/model_round_1").metadata["round"] == 1
    with pytest.raises(ConfigError, match="no longer keeps"):
        log_study_model(config.run_dir, config.tracking.uri, summary["run_id"], round_index=1)


def test_register_as_must_be_a_name_and_needs_log_model(tmp_path):
    data = tiny_study(tmp_path)
    with pytest.raises(ConfigError, match="register_as"):
        config_from_data({**data, "tracking": {**data["tracking"], "register_as": " "}})
    with pytest.raises(ConfigError, match="log_model"):
        config_from_data({**data, "tracking": {**data["tracking"], "register_as": "x", "log_model": False}})
    assert config_from_data(data).tracking.log_model is True
