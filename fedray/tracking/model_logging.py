"""The study's model in its MLflow run: a pyfunc logged as code over a snapshot of the run folder.

What MLflow stores (the logged model "model", or "model_round_N" for a round kept with
`tracking.keep_every`):

    MLmodel                      flavour python_function, loader mlflow.pyfunc.loaders.code_model,
                                 signature, metadata (organs, labels, preprocessing, sliding window, round)
    pyfunc_model.py              the model's code (fedray/tracking/pyfunc_model.py), run at load
    artifacts/study/             config.resolved.yaml, hospitals.json, checkpoints/latest.npz and the
                                 client states the judged model reads (client_state/<hospital>/<round>.npz)
    requirements.txt, python_env.yaml, conda.yaml

Nothing in it is a pickle: the model is code, not a cloudpickled PythonModel (MLflow's default for a
`python_model` object, python_model.pkl), nor a torch.save'd nn.Module (what `mlflow.pytorch`
would store, which loads only with `weights_only=False`). The weights are npz archives read with
`allow_pickle=False`, and a method's own state (a checkpoint blob) loads with `torch.load(...,
weights_only=True)`. `mlflow.pyfunc.load_model` does run the model's code file from the store (as
any code-based model does); `load_logged_study` builds the model with the installed fedray from the
data files alone, running nothing from the store, for a store not trusted with code.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import LoggedModel, LoggedModelStatus
from mlflow.models import Model, ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, Schema

import fedray
from fedray.config import StudyConfig, load_run_config
from fedray.configtypes import to_data
from fedray.data.federation import Hospital
from fedray.inference.predict import TrainedStudy, _hospitals, load_trained
from fedray.messages import State, decode_state
from fedray.models.factory import build_model
from fedray.strategies import build_strategy
from fedray.tracking.callbacks import Callback, RunContext
from fedray.tracking.checkpoint import Checkpoint, checkpoint_path, load_checkpoint, save_checkpoint
from fedray.tracking.client_store import ClientStateStore

log = logging.getLogger(__name__)

MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")  # run by MLflow, never imported here
STUDY_ARTIFACT = "study"  # the artifact the code loads (pyfunc_model.STUDY_ARTIFACT)
_LOGGING = threading.Lock()  # MLflow's model logging reads a process-wide tracking URI: one at a time
_REQUIREMENTS = ("fedray", "mlflow", "torch", "monai", "nibabel", "numpy", "pandas", "pyyaml")


def model_name(round_index: int | None = None) -> str:
    """The logged model's name in the run: "model" (the study's final model), or "model_round_N"."""
    return "model" if round_index is None else f"model_round_{round_index}"


# -- the snapshot -------------------------------------------------------------------------------------
class _ReadStates:
    """Client states as the judged model reads them, noting each read (what the snapshot must hold)."""

    def __init__(self, run_dir: Path) -> None:
        self.store = ClientStateStore(run_dir / "client_state")
        self.read: list[tuple[str, int, bytes]] = []

    def get(self, hospital_id: str, before_round: int) -> State | None:
        payload = self.store.get(hospital_id, before_round)
        if payload is None:
            return None
        self.read.append((hospital_id, before_round, payload))
        return decode_state(payload)


def _states_read(run_dir: Path, config: StudyConfig, checkpoint: Checkpoint, hospitals: list[Hospital]) -> _ReadStates:
    """The states in `run_dir` that the method's evaluation model reads at `checkpoint` (none for most
    methods), with the method set up as `load_trained` sets it up."""
    organs = list(config.data.organs)
    model = build_model(config.model, len(organs))
    strategy = build_strategy(config.method)
    strategy.setup(organs, hospitals, model)
    strategy.load_state_dict({k.removeprefix("method/"): v for k, v in checkpoint.blobs.items() if k.startswith("method/")})
    states = _ReadStates(run_dir)
    strategy.evaluation_model(model, checkpoint.round, states)
    return states


def write_snapshot(run_dir: str | Path, checkpoint: Checkpoint, dest: str | Path) -> Path:
    """A run folder holding only what `load_trained` needs for `checkpoint`'s model: the resolved config,
    hospitals.json, the checkpoint as checkpoints/latest.npz and the client states it reads (each
    stored as the round before the one it is read for, so the snapshot answers every read the same)."""
    run_dir, dest = Path(run_dir), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(run_dir / "config.resolved.yaml", dest / "config.resolved.yaml")
    config = load_run_config(run_dir)
    if (run_dir / "hospitals.json").is_file():
        shutil.copy2(run_dir / "hospitals.json", dest / "hospitals.json")
    else:  # a run from before hospitals.json: listed again from its config, once, here
        records = [h.record() for h in _hospitals(run_dir, config)]
        (dest / "hospitals.json").write_text(json.dumps({"hospitals": records}, indent=2))
    save_checkpoint(checkpoint, checkpoint_path(dest))
    store = ClientStateStore(dest / "client_state")
    for hospital_id, before_round, payload in _states_read(run_dir, config, checkpoint, _hospitals(dest, config)).read:
        store.put(hospital_id, before_round - 1, payload)
    return dest


# -- the MLflow model ---------------------------------------------------------------------------------
def signature(organs: tuple[str, ...]) -> ModelSignature:
    """Input: `image` (a NIfTI path) and optional `output` (a folder). Output: one row per input."""
    inputs = Schema([ColSpec("string", "image"), ColSpec("string", "output", required=False)])
    outputs = Schema([
        ColSpec("string", "input"),
        ColSpec("string", "output", required=False),
        ColSpec("string", "error", required=False),
        ColSpec("double", "seconds", required=False),
        *[ColSpec("long", f"voxels/{organ}", required=False) for organ in organs],
    ])
    return ModelSignature(inputs=inputs, outputs=outputs)


def model_metadata(trained: TrainedStudy, run_id: str | None) -> dict[str, Any]:
    """What a user of the model needs to know of it (in MLmodel's metadata)."""
    cfg = trained.config
    window = {k: v for k, v in to_data(cfg.eval).items() if k != "every"}
    return {
        "fedray_version": fedray.__version__,
        "study": cfg.name,
        "run_id": run_id,
        "round": trained.round,
        "method": cfg.method.name,
        "model": {"name": cfg.model.name, "output": cfg.model.output},
        "organs": list(trained.organs),
        "labels": trained.label_names(),
        "preprocessing": {
            "orientation": "RAS",
            "hu_window": list(cfg.data.hu_window),
            "spacing": None if cfg.data.preprocess.spacing is None else list(cfg.data.preprocess.spacing),
            "crop_foreground": cfg.data.preprocess.crop_foreground,
        },
        "sliding_window": window,
        "input": "DataFrame: image (NIfTI path), optional output (folder; a temporary one if absent)",
    }


def _requirements() -> list[str]:
    found = []
    for name in _REQUIREMENTS:
        try:
            found.append(f"{name}=={package_metadata.version(name)}")
        except package_metadata.PackageNotFoundError:
            found.append(name)
    return found


@contextmanager
def _tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's fluent API (model logging, registration) on `uri` for a while, then exactly as it was:
    the URI set with `mlflow.set_tracking_uri` if any, and MLFLOW_TRACKING_URI, which setting one sets
    and MLflow's own `_use_tracking_uri` would leave unset afterwards."""
    from mlflow.tracking._tracking_service import utils

    set_before, env_before = utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(set_before)  # None unsets MLFLOW_TRACKING_URI too...
        if env_before is not None:
            os.environ["MLFLOW_TRACKING_URI"] = env_before  # ...which was set before


@contextmanager
def _failed_unless_done(client: MlflowClient, logged: LoggedModel) -> Iterator[None]:
    """Mark the logged model FAILED if what it holds could not all be logged."""
    try:
        yield
    except BaseException:
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise


def logged_model_exists(tracking_uri: str, run_id: str, name: str) -> bool:
    """Whether the run already has a logged model of that name (a resumed study redoes rounds)."""
    client = MlflowClient(tracking_uri=tracking_uri)
    run = client.get_run(run_id)
    found = client.search_logged_models(
        experiment_ids=[run.info.experiment_id], filter_string=f"source_run_id = '{run_id}' AND name = '{name}'"
    )
    return any(m.status == LoggedModelStatus.READY for m in found)  # not one whose logging failed


def log_checkpoint_model(
    run_dir: str | Path,
    checkpoint: Checkpoint,
    tracking_uri: str,
    run_id: str,
    name: str = "model",
    register_as: str | None = None,
) -> ModelInfo:
    """Log `checkpoint`'s model of the run folder to MLflow run `run_id` as pyfunc `name` (and register
    it as `register_as`); returns MLflow's ModelInfo (model_uri, registered_model_version...)."""
    with tempfile.TemporaryDirectory(prefix="fedray-model-") as tmp:
        snapshot = write_snapshot(run_dir, checkpoint, Path(tmp) / STUDY_ARTIFACT)
        trained = load_trained(snapshot)  # the artifact loads, as the pyfunc will load it
        client = MlflowClient(tracking_uri=tracking_uri)
        # Created here, in the run's experiment: left to itself MLflow puts a model logged to a run
        # that is not the active one in the default experiment, where `runs:/<id>/model` misses it.
        logged = client.create_logged_model(client.get_run(run_id).info.experiment_id, name=name, source_run_id=run_id)
        with _LOGGING, _tracking_uri(tracking_uri), warnings.catch_warnings(), _failed_unless_done(client, logged):
            # no input example: one would have to be a NIfTI file that MLflow segments while logging
            warnings.filterwarnings("ignore", message=".*An input example was not provided", category=UserWarning)
            info = Model.log(
                artifact_path=None,
                name=name,
                flavor=mlflow.pyfunc,
                run_id=run_id,
                model_id=logged.model_id,
                step=trained.round,
                python_model=str(MODEL_CODE),
                artifacts={STUDY_ARTIFACT: str(snapshot)},
                signature=signature(trained.organs),
                metadata=model_metadata(trained, run_id),
                pip_requirements=_requirements(),
            )
            if register_as:
                version = mlflow.register_model(info.model_uri, register_as)
                info.registered_model_version = version.version
    return info


def log_study_model(
    run_dir: str | Path,
    tracking_uri: str,
    run_id: str,
    round_index: int | str | None = None,
    register_as: str | None = None,
) -> ModelInfo:
    """Log a finished run folder's model (its last checkpoint, a kept round's or "best") to MLflow run
    `run_id` (e.g. `fedray export RUN --mlflow`); the name is "model", or "model_round_N" for a round.

    Raises:
        ConfigError: not a run folder, no such checkpoint, or a round whose client states are gone.
    """
    run_dir = Path(run_dir)
    load_trained(run_dir, round_index)  # refuses what `fedray predict --round` refuses, with its message
    checkpoint = load_checkpoint(checkpoint_path(run_dir, round_index))
    name = "model_best" if round_index == "best" else model_name(None if round_index is None else int(round_index))
    return log_checkpoint_model(run_dir, checkpoint, tracking_uri, run_id, name, register_as)


def load_logged_study(
    model_uri: str, tracking_uri: str | None = None, device: str = "cpu", dst: str | Path | None = None
) -> TrainedStudy:
    """A logged model ("runs:/<id>/model", "models:/<name>/<version>", ...) built by the installed
    fedray from its data files only (config, checkpoint, client states), without running the code
    file stored with it: what `mlflow.pyfunc.load_model` gives as `unwrap_python_model().trained`.

    The model is downloaded to `dst` (a new temporary folder if None), which `TrainedStudy.run_dir` names.
    """
    import yaml

    dst = Path(dst) if dst is not None else Path(tempfile.mkdtemp(prefix="fedray-logged-"))
    with _LOGGING, _tracking_uri(tracking_uri or mlflow.get_tracking_uri()):
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dst)))
    flavour = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]
    return load_trained(local / flavour["artifacts"][STUDY_ARTIFACT]["path"], device=device)


class ModelLoggingCallback(Callback):
    """With `tracking.log_model`, logs the model to the study's MLflow run at each round kept with
    `tracking.keep_every` ("model_round_N") and, once the study finished, its final model ("model",
    registered as `tracking.register_as` if set).

    It comes before MlflowCallback in the driver's list, so the run is still open when the final model
    is logged (MlflowCallback closes it); the model is taken from `run.snapshot()`, the state the
    checkpoint of that round holds. A model that cannot be logged is a warning and a run tag
    (`model_error`), not a failed study: `log_study_model` can log it again from the run folder.
    """

    def _uri(self, run: RunContext) -> str:
        from fedray.tracking.mlflow import default_tracking_uri

        cfg = run.config.tracking
        return cfg.uri or default_tracking_uri(cfg.results_dir)

    def _log(self, run: RunContext, name: str, register_as: str | None = None) -> None:
        uri = self._uri(run)
        try:
            if logged_model_exists(uri, run.run_id, name):
                return  # a resumed study redid this round: the same weights are logged already
            log_checkpoint_model(run.config.run_dir, run.snapshot(), uri, run.run_id, name, register_as)
        except Exception as error:  # the study's results stand; the model can be logged again later
            log.warning("could not log the model %s to MLflow run %s", name, run.run_id, exc_info=True)
            MlflowClient(tracking_uri=uri).set_tag(run.run_id, "model_error", f"{name}: {error}"[:5000])

    def on_round_end(self, run: RunContext, row: dict[str, Any]) -> None:
        cfg, round_index = run.config, row["round"]
        keep = cfg.tracking.keep_every
        if cfg.tracking.log_model and keep and round_index % keep == 0 and not run.last_round:
            self._log(run, model_name(round_index))  # the last round's is "model", at the end

    def on_run_end(self, run: RunContext, status: str, summary: dict[str, Any] | None) -> None:
        if status == "FINISHED" and run.config.tracking.log_model and run.run_id is not None:
            self._log(run, model_name(), run.config.tracking.register_as)
