"""Segment new CT with a finished study's model: the study's preprocessing, sliding window, then back to the input's grid."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from torch import nn

from fedray.config import EvalConfig, StudyConfig, load_run_config
from fedray.data.datasets import preprocessing, to_original_space
from fedray.data.federation import Hospital
from fedray.errors import ConfigError, DataError
from fedray.messages import State
from fedray.models.factory import build_model
from fedray.strategies import build_strategy
from fedray.strategies.base import Strategy, state_to_torch
from fedray.tracking.checkpoint import Checkpoint, checkpoint_path, load_checkpoint
from fedray.tracking.client_store import ClientStateStore, DecodedClientStates
from fedray.training.evaluate import predict

NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass
class TrainedStudy:
    """A finished (or checkpointed) study's model as the test set scored it, ready to segment."""

    config: StudyConfig
    model: nn.Module  # the model the study is judged by (local-only: its ensemble), in eval mode
    round: int
    run_dir: Path
    device: torch.device

    @property
    def organs(self) -> tuple[str, ...]:
        return tuple(self.config.data.organs)

    def label_names(self) -> dict[str, str]:
        """Label value -> name of the written label maps (the study's numbering)."""
        return {"0": "background", **{str(k + 1): organ for k, organ in enumerate(self.organs)}}


class _StatesOfRound:
    """The run's client states, refusing a round whose states the run no longer keeps (it keeps the
    last checkpoint's and the best round's; a run pruned before that was recorded, the last only)."""

    def __init__(self, run_dir: Path, latest_round: int) -> None:
        self.store = ClientStateStore(run_dir / "client_state")
        self.states = DecodedClientStates(self.store)
        self.latest_round = latest_round

    def get(self, hospital_id: str, before_round: int) -> State | None:
        round_index = before_round - 1
        kept = self.store.complete_at(round_index)
        if not (round_index >= self.latest_round if kept is None else kept):
            raise ConfigError(
                f"this method's model at round {round_index} needs the hospitals' states of that round, "
                f"which the run no longer keeps (only round {self.latest_round}'s and the best round's): "
                "use the last round or --round best."
            )
        return self.states.get(hospital_id, before_round)


def load_trained(run_dir: str | Path, round_index: int | str | None = None, device: str = "cpu") -> TrainedStudy:
    """The model of `run_dir` after its last checkpointed round, after `round_index` (a checkpoint
    kept with `tracking.keep_every`) or at its best evaluated round ("best"), built as the study's
    own evaluation built it.

    Raises:
        ConfigError: not a run folder, no such checkpoint, or an unavailable device.
    """
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    path = checkpoint_path(run_dir, round_index)
    if not path.is_file():
        kept = sorted(p.name for p in path.parent.glob("round_*.npz")) if path.parent.is_dir() else []
        raise ConfigError(
            f"'{run_dir}' has no checkpoint {path.name}"
            + (f"; kept rounds: {', '.join(kept)}" if kept else " (set tracking.keep_every to keep rounds)")
            + "."
        )
    checkpoint = load_checkpoint(path)
    latest = load_checkpoint(checkpoint_path(run_dir)).round if round_index is not None else checkpoint.round
    organs = list(config.data.organs)
    model = build_model(config.model, len(organs))
    model.load_state_dict(state_to_torch(checkpoint.global_state))
    strategy = restored_strategy(run_dir, config, checkpoint, model)
    judged = strategy.evaluation_model(model, checkpoint.round, _StatesOfRound(run_dir, latest))
    target = _device(device)
    return TrainedStudy(config, judged.to(target).eval(), checkpoint.round, run_dir, target)


def restored_strategy(run_dir: Path, config: StudyConfig, checkpoint: Checkpoint, model: nn.Module) -> Strategy:
    """The study's method with its server state (preparation results included) as `checkpoint` holds it."""
    strategy = build_strategy(config.method)
    strategy.setup(list(config.data.organs), _hospitals(run_dir, config), model)
    strategy.load_state_dict({k.removeprefix("method/"): v for k, v in checkpoint.blobs.items() if k.startswith("method/")})
    return strategy


def _hospitals(run_dir: Path, config: StudyConfig) -> list[Hospital]:
    """The study's hospitals as it recorded them (hospitals.json), else listed again from its config."""
    recorded = run_dir / "hospitals.json"
    if recorded.is_file():
        return [Hospital.from_record(r) for r in json.loads(recorded.read_text())["hospitals"]]
    from fedray.data.federation import prepare_hospitals

    return prepare_hospitals(config).hospitals


def _device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device is available here (use cpu or auto).")
    return device


def input_files(path: str | Path) -> list[Path]:
    """A NIfTI file, or the NIfTI files of a folder (sorted).

    Raises:
        DataError: nothing there, or a folder without NIfTI files.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.name.endswith(NIFTI_SUFFIXES) and p.is_file())
        if not files:
            raise DataError(f"'{path}' holds no .nii or .nii.gz file.")
        return files
    if not path.exists():
        raise DataError(f"'{path}' does not exist.")
    return [path]


def image_problem(path: Path) -> str | None:
    """Why `path` cannot be segmented (as a study case is checked), or None."""
    try:
        image = nib.load(path)
    except Exception as error:  # nibabel raises many types (ImageFileError, OSError, EOFError, ...)
        return f"cannot be read as NIfTI ({type(error).__name__}: {error})"
    shape = tuple(image.shape)
    if len(shape) != 3 and not (len(shape) == 4 and shape[3] == 1):
        return f"has shape {shape}: a 3-D CT volume is needed (4-D series are not segmented)"
    if 0 in shape:
        return f"has an empty grid {shape}"
    try:
        voxels = np.asanyarray(image.dataobj)
    except Exception as error:  # truncated or corrupt compressed data
        return f"cannot be read in full ({type(error).__name__}: {error})"
    if voxels.dtype.kind == "f":
        nonfinite = voxels.size - int(np.count_nonzero(np.isfinite(voxels)))
        if nonfinite:
            return f"has {nonfinite} NaN or infinite voxel(s)"
    return None


def segment(trained: TrainedStudy, path: Path, eval_cfg: EvalConfig | None = None) -> np.ndarray:
    """(X, Y, Z) uint8 label map of `path` on the file's own grid and orientation, study numbering.

    The study's preprocessing (RAS, spacing, HU window, body crop) is applied, the volume predicted
    with the study's sliding window (or `eval_cfg`), and the labels mapped back exactly as the
    study's evaluation maps them before scoring.
    """
    cfg = trained.config
    case = preprocessing(None, cfg.data.hu_window, cfg.data.preprocess, with_label=False)({"image": str(path)})
    labels = predict(trained.model, case["image"][None].to(trained.device), cfg.model.output, eval_cfg or cfg.eval)
    return to_original_space(labels.cpu(), case).numpy().astype(np.uint8)


def write_labels(labels: np.ndarray, source: Path, out_dir: Path) -> Path:
    """Save a label map beside the input's name in `out_dir`, with the input's affine and header."""
    image = nib.load(source)
    header = image.header.copy()
    header.set_data_dtype(np.uint8)
    out = Path(out_dir) / source.name
    if not out.name.endswith(NIFTI_SUFFIXES):
        out = out.with_name(out.name + ".nii.gz")
    nib.save(nib.Nifti1Image(labels.reshape(image.shape[:3]), image.affine, header), out)
    return out


@dataclass(frozen=True)
class Prediction:
    """One input's outcome: the written label map, or why it was not segmented."""

    input: Path
    output: Path | None = None
    error: str | None = None
    seconds: float = math.nan
    voxels: dict[str, int] | None = None  # organ -> voxels in the label map


def predict_files(
    trained: TrainedStudy,
    inputs: Sequence[Path],
    out_dir: str | Path,
    eval_cfg: EvalConfig | None = None,
    on_volume: Callable[[Prediction], None] | None = None,
) -> list[Prediction]:
    """Segment each input into `out_dir` (one NIfTI per input, plus labels.json with the organ names).

    A bad input (unreadable, 4-D, NaN voxels) is reported with its reason and the others are still
    segmented; `on_volume` is called after each.
    """
    import time

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "labels.json").write_text(json.dumps(trained.label_names(), indent=2) + "\n")
    results = []
    for path in inputs:
        problem = image_problem(path)
        if problem is not None:
            result = Prediction(path, error=f"{path}: {problem}")
        else:
            start = time.perf_counter()
            try:
                labels = segment(trained, path, eval_cfg)
            except (RuntimeError, ValueError) as error:  # MONAI wraps what fails inside a transform
                result = Prediction(path, error=f"{path}: could not be segmented ({error})")
            else:
                output = write_labels(labels, path, out_dir)
                counts = np.bincount(labels.ravel(), minlength=len(trained.organs) + 1)
                result = Prediction(
                    path, output, seconds=time.perf_counter() - start,
                    voxels={organ: int(counts[k + 1]) for k, organ in enumerate(trained.organs)},
                )
        results.append(result)
        if on_volume is not None:
            on_volume(result)
    return results


def study_test_set(config: StudyConfig) -> Path:
    """The images of the study's own fully-labelled test folder (data.test_set or its phantom's)."""
    from fedray.data.federation import held_out_folder

    folder = held_out_folder(config)
    images = folder / "imagesTr" if (folder / "imagesTr").is_dir() else folder
    if not images.is_dir():
        raise DataError(f"the study's test set '{folder}' is not on this machine.")
    return images


def pooled_dice(outputs: dict[str, Path], config: StudyConfig) -> dict[str, float]:
    """Dice of label maps written for the study's test set (input file name -> label map) against its
    references, from TP/FP/FN summed over the volumes, as the study's own `dice/*`: organ -> Dice, and
    "mean" (NaN organs skipped).

    Raises:
        DataError: a test volume has no label map.
    """
    from fedray.config import SiteConfig
    from fedray.data.datasets import load_cases
    from fedray.data.federation import held_out_folder
    from fedray.data.sites import read_site_cases
    from fedray.metrics.segmentation import confusion_counts, dice_from_counts, mean_dice

    organs = list(config.data.organs)
    listed = read_site_cases(SiteConfig(path=str(held_out_folder(config))), require_files=True).cases
    missing = [c.image.name for c in listed if c.image.name not in outputs]
    if missing:
        raise DataError(f"no label map for test volume(s) {', '.join(missing[:5])}")
    cases = load_cases(listed, organs, config.data.hu_window, config.data.preprocess)
    counts = np.zeros((len(organs), 3), dtype=np.int64)
    for site_case, case in zip(listed, cases, strict=True):
        predicted = torch.as_tensor(np.asarray(nib.load(outputs[site_case.image.name]).dataobj)).long()
        counts += confusion_counts(predicted, case["original_label"][0].long(), len(organs))
    dice = dice_from_counts(counts)
    return {**{o: float(d) for o, d in zip(organs, dice)}, "mean": mean_dice(dice)}


def eval_with(cfg: EvalConfig, overrides: dict) -> EvalConfig:
    """The study's sliding-window settings with some replaced (`fedray predict --overlap 0.5`)."""
    return replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
