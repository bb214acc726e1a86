"""A finished study's judged model as a MONAI bundle, which MONAI's own bundle runner segments CT with.

    OUT/configs/metadata.json   MONAI's metadata fields, the label numbering, the study's config summary
    OUT/configs/inference.json  network_def, preprocessing, inferer, postprocessing, evaluator, run
    OUT/models/model.pt         the judged model's state_dict (plain tensors: torch.load(weights_only=True))
    OUT/docs/README.md          the study, its data, its Dice, and how to run the bundle

The bundle runs without fedray for MONAI's UNet: every transform is MONAI's own and the two small
functions the study uses (the body mask of the foreground crop, the sigmoid label rule) are written as
config expressions. The multi-head U-Net and local-only's per-organ ensemble are fedray classes, so
those bundles need fedray importable. The evaluator is a plain loop over MONAI's DataLoader, so the
bundle needs no pytorch-ignite either.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import monai
import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.networks.nets import UNet
from torch import nn

from fedray import __version__ as FEDRAY_VERSION
from fedray.config import StudyConfig
from fedray.configtypes import to_data
from fedray.data.federation import held_out_folder
from fedray.errors import ConfigError
from fedray.inference.predict import TrainedStudy, load_trained
from fedray.models.ensemble import OrganEnsemble
from fedray.models.factory import output_channels
from fedray.models.multihead import MultiHeadUNet3D

CONFIG_FILE = "configs/inference.json"
META_FILE = "configs/metadata.json"
MODEL_FILE = "models/model.pt"
README_FILE = "docs/README.md"
META_SCHEMA = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
OUTPUT_POSTFIX = "seg"  # OUT/<input name without .nii/.nii.gz>_seg.nii.gz, MONAI's convention

# datasets.above_window and evaluate.logits_to_labels as config expressions (a bundle of MONAI's
# UNet then needs no fedray); the bundle test checks them against `fedray predict` voxel for voxel.
BODY_EXPRESSION = "$lambda image: image > -1.0"
SOFTMAX_LABELS_EXPRESSION = (
    "$lambda logits: torch.where(logits.softmax(dim=0)[1:].gather(0, logits[1:].argmax(dim=0, keepdim=True)) > 0.5,"
    " logits[1:].argmax(dim=0, keepdim=True) + 1, torch.zeros_like(logits[:1], dtype=torch.long))"
)
SIGMOID_LABELS_EXPRESSION = (
    "$lambda logits: torch.where(logits.max(dim=0, keepdim=True).values > 0.0,"
    " logits.argmax(dim=0, keepdim=True) + 1, torch.zeros_like(logits[:1], dtype=torch.long))"
)


def export_bundle(run_dir: str | Path, out_dir: str | Path, round_index: int | str | None = None) -> Path:
    """Write the MONAI bundle of `run_dir`'s judged model to `out_dir`: after its last checkpointed
    round, or `round_index` (a kept round, or "best"), as `fedray predict` loads it.

    A folder holding an earlier bundle is replaced whole; any other non-empty folder is refused.
    Returns `out_dir`.

    Raises:
        ConfigError: not a run folder, no such checkpoint, a model a bundle cannot describe, or an
            `out_dir` that holds something other than a bundle.
    """
    out_dir = Path(out_dir)
    occupied = out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir()))
    if occupied and not (out_dir / META_FILE).is_file():
        raise ConfigError(f"'{out_dir}' exists and is not a bundle folder: choose a new or empty folder.")
    trained = load_trained(run_dir, round_index, device="cpu")
    network_def = network_config(trained.model, trained.config)
    _check_network_def(network_def, trained.model)
    scores = study_scores(trained)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for folder in ("configs", "models", "docs"):
            (staging / folder).mkdir()
        torch.save(plain_state_dict(trained.model), staging / MODEL_FILE)
        _write_json(staging / CONFIG_FILE, inference_config(trained.config, network_def))
        _write_json(staging / META_FILE, metadata(trained, scores, network_def))
        (staging / README_FILE).write_text(readme(trained, scores, network_def))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights and buffers as plain contiguous CPU tensors (torch.load(weights_only=True))."""
    state = {}
    for key, value in model.state_dict().items():
        value = value.detach().cpu().clone().contiguous()
        state[key] = value.as_subclass(torch.Tensor) if type(value) is not torch.Tensor else value
    return state


def network_config(model: nn.Module, config: StudyConfig) -> dict[str, Any]:
    """The `_target_` definition that builds `model`'s exact module (its weights come from model.pt).

    Raises:
        ConfigError: a module type a bundle cannot describe.
    """
    cfg, n_organs = config.model, len(config.data.organs)
    if isinstance(model, OrganEnsemble):
        return {
            "_target_": "fedray.models.ensemble.OrganEnsemble",
            "models": [network_config(member, config) for member in model.members],
            "picks": [[int(m), int(c)] for m, c in model.picks],
        }
    if type(model) is MultiHeadUNet3D:
        softmax = cfg.output == "softmax"
        return {
            "_target_": "fedray.models.multihead.MultiHeadUNet3D",
            "n_heads": 1 if softmax else n_organs,
            "outputs_per_head": n_organs + 1 if softmax else 1,
            "widths": list(cfg.channels),
            "blocks": list(cfg.blocks or (1,) * len(cfg.channels)),
            "norm_groups": cfg.norm_groups,
        }
    if type(model) is UNet:
        return {
            "_target_": "monai.networks.nets.UNet",
            "spatial_dims": 3,
            "in_channels": 1,
            "out_channels": output_channels(cfg, n_organs),
            "channels": list(cfg.channels),
            "strides": list(cfg.strides),
            "num_res_units": cfg.num_res_units,
        }
    raise ConfigError(f"a MONAI bundle cannot describe a {type(model).__name__} model yet.")


def _check_network_def(network_def: dict, model: nn.Module) -> None:
    """Build `network_def` as the bundle will and insist it is `model`'s module, layer for layer."""
    built = ConfigParser({"network_def": network_def}).get_parsed_content("network_def")
    if [type(m) for m in built.modules()] != [type(m) for m in model.modules()]:
        raise ConfigError(f"the bundle's network_def does not rebuild the study's {type(model).__name__}.")
    try:
        built.load_state_dict(model.state_dict(), strict=True)
    except RuntimeError as error:
        raise ConfigError(f"the bundle's network_def does not fit the study's weights: {error}") from None


def preprocessing_config(config: StudyConfig) -> list[dict[str, Any]]:
    """`fedray.data.datasets.preprocessing(..., with_label=False)` as MONAI bundle transforms."""
    data = config.data
    low, high = data.hu_window
    steps: list[dict[str, Any]] = [
        {"_target_": "LoadImaged", "keys": "image", "image_only": True},
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
        # The input's own grid, kept before any spatial change: the label map is resampled onto it.
        {"_target_": "CopyItemsd", "keys": "image", "names": "original_image"},
        {
            "_target_": "Orientationd", "keys": "image", "axcodes": "RAS",
            "labels": [["L", "R"], ["P", "A"], ["I", "S"]],
        },
    ]
    if data.preprocess.spacing is not None:
        steps.append({
            "_target_": "Spacingd", "keys": "image", "pixdim": list(data.preprocess.spacing), "mode": "bilinear",
        })
    steps.append({
        "_target_": "ScaleIntensityRanged", "keys": "image", "a_min": float(low), "a_max": float(high),
        "b_min": -1.0, "b_max": 1.0, "clip": True,
    })
    if data.preprocess.crop_foreground:
        steps.append({
            "_target_": "CropForegroundd", "keys": "image", "source_key": "image", "select_fn": BODY_EXPRESSION,
            "allow_smaller": True,
        })
    return steps


def labels_config(output: str) -> dict[str, Any]:
    """`fedray.training.evaluate.logits_to_labels` on one (C, X, Y, Z) prediction, as a MONAI transform."""
    expression = SOFTMAX_LABELS_EXPRESSION if output == "softmax" else SIGMOID_LABELS_EXPRESSION
    return {"_target_": "Lambdad", "keys": "pred", "func": expression}


def inference_config(config: StudyConfig, network_def: dict) -> dict[str, Any]:
    """configs/inference.json: MONAI's standard ids, with inputs, outputs and device overridable."""
    ev = config.eval
    return {
        "imports": ["$import glob", "$import os"],
        "bundle_root": ".",
        "ckpt_path": "$@bundle_root + '/models/model.pt'",
        "dataset_dir": "$@bundle_root + '/input'",
        "output_dir": "$@bundle_root + '/output'",
        "datalist": (
            "$[@dataset_dir] if os.path.isfile(@dataset_dir) else sorted(p for p in glob.glob(os.path.join("
            "@dataset_dir, '*')) if p.endswith(('.nii', '.nii.gz')) and os.path.isfile(p))"
        ),
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "num_workers": 0,
        "network_def": network_def,
        "network": "$@network_def.to(@device)",
        # The network sees plain tensors (MetaTensor's bookkeeping doubles a small model's time); the
        # inferer still returns a MetaTensor with the image's metadata, which the way back needs.
        "predictor": "$lambda window: @network(window.as_subclass(torch.Tensor))",
        "preprocessing": {"_target_": "Compose", "transforms": preprocessing_config(config)},
        "dataset": {
            "_target_": "Dataset", "data": "$[{'image': path} for path in @datalist]",
            "transform": "@preprocessing",
        },
        "dataloader": {
            "_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False,
            "num_workers": "@num_workers",
        },
        "inferer": {
            "_target_": "SlidingWindowInferer", "roi_size": list(ev.roi_size), "sw_batch_size": ev.sw_batch_size,
            "overlap": ev.overlap, "mode": ev.mode,
        },
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [
                labels_config(config.model.output),
                # fedray.data.datasets.to_original_space: one nearest resampling from the preprocessed
                # grid straight onto the input's grid (outside the crop: background). Invertd undoes
                # each step in turn and differs at exact nearest-neighbour ties (see docs/README.md).
                {
                    "_target_": "ResampleToMatchd", "keys": "pred", "key_dst": "original_image", "mode": "nearest",
                    "padding_mode": "zeros", "align_corners": False, "dtype": "$torch.float64",
                },
                {
                    "_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir",
                    "output_postfix": OUTPUT_POSTFIX, "output_ext": ".nii.gz", "output_dtype": "$numpy.uint8",
                    "resample": False, "separate_folder": False, "print_log": False, "savepath_in_metadict": True,
                },
            ],
        },
        # Each volume as MONAI's SupervisedEvaluator runs it (collate, infer, decollate, postprocess),
        # without pytorch-ignite; returns the written files' paths (no volume is kept in memory).
        "evaluator": (
            "$lambda: [@postprocessing(item)['pred'].meta['saved_to'] for batch in @dataloader for item in"
            " monai.data.decollate_batch({**batch, 'pred': @inferer(batch['image'].to(@device), @predictor)})]"
        ),
        "initialize": [
            "$@network.load_state_dict(torch.load(@ckpt_path, map_location=@device, weights_only=True))",
            "$@network.eval().requires_grad_(False)",
        ],
        "run": ["$@evaluator()"],
    }


SCORES = ("dice/", "hd95/")


def study_scores(trained: TrainedStudy) -> dict[str, float]:
    """The exported round's test-set scores: summary.json for the final round, rounds.csv for another."""
    run_dir = trained.run_dir
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    if summary.get("rounds") == trained.round:
        return {k: float(v) for k, v in summary.items() if k.startswith(SCORES) and _is_number(v)}
    rounds = run_dir / "rounds.csv"
    if rounds.is_file():
        with rounds.open(newline="") as handle:
            for row in csv.DictReader(handle):
                if row.get("round") == str(trained.round):
                    return {k: float(v) for k, v in row.items() if k.startswith(SCORES) and v not in ("", None)}
    return {}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _test_volumes(config: StudyConfig) -> tuple[Path, int | None]:
    folder = held_out_folder(config)
    listing = folder / "dataset.json"
    if listing.is_file():
        return folder, len(json.loads(listing.read_text()).get("training", []))
    if config.data.source == "phantom":
        return folder, config.data.phantom.test_cases
    return folder, None


def _hospitals(trained: TrainedStudy) -> list[dict[str, Any]]:
    recorded = trained.run_dir / "hospitals.json"
    if recorded.is_file():
        return [
            {"name": h["hospital_id"], "organs": list(h["organs"]), "cases": len(h["cases"])}
            for h in json.loads(recorded.read_text())["hospitals"]
        ]
    return [
        {"name": h.name or f"hospital_{i}", "organs": list(h.organs), "cases": h.cases}
        for i, h in enumerate(trained.config.federation.hospitals)
    ]


def study_summary(trained: TrainedStudy) -> dict[str, Any]:
    """What metadata.json records of the study (the `fedray` key)."""
    config = trained.config
    pre = config.data.preprocess
    test_dir, test_cases = _test_volumes(config)
    return {
        "fedray_version": FEDRAY_VERSION,
        "study": config.name,
        "seed": config.seed,
        "method": to_data(config.method),
        "rounds": config.rounds,
        "exported_round": trained.round,
        "run_dir": str(trained.run_dir.resolve()),
        "model": to_data(config.model),
        "organs": list(config.data.organs),
        "label_numbering": trained.label_names(),
        "data_source": config.data.source,
        "hospitals": _hospitals(trained),
        "test_set": {"path": str(test_dir), "volumes": test_cases},
        "hu_window": list(config.data.hu_window),
        "preprocess": {"spacing": pre.spacing, "crop_foreground": pre.crop_foreground},
        "eval": {k: v for k, v in to_data(config.eval).items() if k != "every"},
    }


def fedray_classes(network_def: dict) -> list[str]:
    """The fedray classes `network_def` builds (none: the bundle runs with MONAI alone)."""
    found: list[str] = []

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            target = node.get("_target_", "")
            if target.startswith("fedray.") and target.rsplit(".", 1)[-1] not in found:
                found.append(target.rsplit(".", 1)[-1])
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(network_def)
    return found


def metadata(trained: TrainedStudy, scores: dict[str, float], network_def: dict) -> dict[str, Any]:
    """configs/metadata.json in MONAI's bundle metadata schema, plus the study (`fedray`)."""
    config = trained.config
    organs = list(config.data.organs)
    softmax = config.model.output == "softmax"
    channels = ["background", *organs] if softmax else organs
    required = {"nibabel": _version("nibabel")}
    if fedray_classes(network_def):
        required["fedray"] = FEDRAY_VERSION
    numbering = ", ".join(f"{k} {name}" for k, name in trained.label_names().items())
    dice = {name: _finite(scores.get(f"dice/{name}")) for name in ["mean", *organs]}
    roi = list(config.eval.roi_size)
    return {
        "schema": META_SCHEMA,
        "version": "0.1.0",
        "changelog": {"0.1.0": f"fedray {FEDRAY_VERSION} export of study '{config.name}', round {trained.round}"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "required_packages_version": required,
        "name": f"fedray {config.name}",
        "task": f"Multi-organ CT segmentation ({', '.join(organs)})",
        "description": (
            f"A {config.model.name} ({config.model.output} output) trained by fedray's federated simulation "
            f"'{config.name}' with method {config.method.name} for {config.rounds} rounds on "
            f"{len(_hospitals(trained))} partially labelled hospitals; exported after round {trained.round}."
        ),
        "authors": "fedray",
        "copyright": "Copyright (c) the authors of the fedray study",
        "data_source": _data_source(config),
        "data_type": "nibabel",
        "image_classes": (
            f"single-channel CT in HU, windowed to [{config.data.hu_window[0]:g}, {config.data.hu_window[1]:g}] "
            "and scaled to [-1, 1]"
        ),
        "label_classes": f"single-channel label map: {numbering}",
        "pred_classes": (
            f"{len(channels)} channels of logits: " + ", ".join(f"{i} {c}" for i, c in enumerate(channels))
            + (" (softmax: the most probable organ where its probability > 0.5, else background)" if softmax
               else " (sigmoid, one per organ: an organ where its logit > 0, the largest where several)")
        ),
        "eval_metrics": {"mean_dice": dice["mean"], **{f"dice_{o}": dice[o] for o in organs}},
        "intended_use": "Research and simulation of federated learning only: not for diagnostic or clinical use.",
        "references": [],
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image", "format": "hounsfield", "modality": "CT", "num_channels": 1,
                    "spatial_shape": roi, "dtype": "float32", "value_range": [-1, 1], "is_patch_data": True,
                    "channel_def": {"0": "image"},
                }
            },
            "outputs": {
                "pred": {
                    "type": "image", "format": "labels" if softmax else "classes", "num_channels": len(channels),
                    "spatial_shape": roi, "dtype": "float32", "value_range": [], "is_patch_data": True,
                    "channel_def": {str(i): c for i, c in enumerate(channels)},
                }
            },
        },
        "fedray": study_summary(trained),
    }


def _data_source(config: StudyConfig) -> str:
    if config.data.source == "phantom":
        p = config.data.phantom
        return (f"fedray's synthetic CT phantom (shape {list(p.shape)}, spacing {list(p.spacing)} mm, "
                f"data seed {p.seed})")
    sites = [s if isinstance(s, str) else s.path for s in config.data.sites]
    return f"sites {', '.join(sites)}; test set {config.data.test_set}"


def _finite(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else value


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4f}"


def readme(trained: TrainedStudy, scores: dict[str, float], network_def: dict) -> str:
    """docs/README.md: the study, its data and Dice, and how to run the bundle."""
    config = trained.config
    organs = list(config.data.organs)
    hospitals = _hospitals(trained)
    test_dir, test_cases = _test_volumes(config)
    classes = fedray_classes(network_def)
    pre = config.data.preprocess
    lines = [
        f"# fedray study `{config.name}`: multi-organ CT segmentation",
        "",
        "A MONAI bundle exported by `fedray export` from a fedray federated-learning simulation. "
        "Research use only: not for diagnosis.",
        "",
        "## Study",
        "",
        f"- Method: `{config.method.name}`"
        + (f" (params: `{json.dumps(to_data(config.method.params))}`)" if to_data(config.method.params) else ""),
        f"- Rounds: {config.rounds} (this bundle holds the model after round {trained.round})",
        f"- Seed: {config.seed}",
        f"- Model: `{config.model.name}`, {config.model.output} output, channels {list(config.model.channels)}"
        + (" (local-only: one model per hospital, each organ predicted by the model of a hospital that "
           "labels it)" if isinstance(trained.model, OrganEnsemble) else ""),
        f"- Run folder: `{trained.run_dir.resolve()}`",
        "",
        "## Data",
        "",
        f"- Source: {_data_source(config)}",
        "- Organs (label values): " + ", ".join(f"{k + 1} {o}" for k, o in enumerate(organs))
        + "; 0 is background",
        f"- Test set: `{test_dir}`" + (f", {test_cases} fully labelled volumes" if test_cases is not None else ""),
        "",
        "| hospital | cases | organs it labels |",
        "| --- | ---: | --- |",
        *[f"| {h['name']} | {h['cases']} | {', '.join(h['organs'])} |" for h in hospitals],
        "",
        "## Test-set Dice",
        "",
        f"The study's own evaluation after round {trained.round}: each organ's Dice = 2TP / (2TP + FP + FN) "
        "from the voxel counts pooled over all test volumes, scored on each volume's original grid; "
        "the mean is over organs (an organ in neither prediction nor reference is left out).",
        "",
        "| organ | Dice |",
        "| --- | ---: |",
        *[f"| {o} | {_fmt(scores.get(f'dice/{o}'))} |" for o in organs],
        f"| **mean** | **{_fmt(scores.get('dice/mean'))}** |",
        "",
        "## Running the bundle",
        "",
        "Needs MONAI " + monai.__version__ + ", PyTorch and nibabel"
        + (f", and fedray importable for its network classes ({', '.join(f'`{c}`' for c in classes)}; "
           "every transform is MONAI's)" if classes
           else "; not fedray (MONAI's UNet and MONAI's transforms only)")
        + "; not pytorch-ignite. The command line needs `fire` (`pip install fire`):",
        "",
        "```bash",
        "python -m monai.bundle run --bundle_root BUNDLE --config_file BUNDLE/configs/inference.json \\",
        "    --meta_file BUNDLE/configs/metadata.json --dataset_dir CT.nii.gz --output_dir OUT",
        "```",
        "",
        "`dataset_dir` is one NIfTI file or a folder of `.nii` / `.nii.gz` files; each is written as "
        f"`OUT/<name>_{OUTPUT_POSTFIX}.nii.gz`, a uint8 label map on the input's own grid and affine "
        "(label values as above). Add `--device '$torch.device(\"cpu\")'` to run on the CPU where a GPU is "
        "present. From Python, without `fire`:",
        "",
        "```python",
        "from monai.bundle import ConfigWorkflow",
        "",
        "workflow = ConfigWorkflow(",
        "    config_file='BUNDLE/configs/inference.json', meta_file='BUNDLE/configs/metadata.json',",
        "    workflow_type='infer', bundle_root='BUNDLE', dataset_dir='CT.nii.gz', output_dir='OUT',",
        ")",
        "workflow.initialize(); workflow.run(); workflow.finalize()",
        "```",
        "",
        "What the bundle does, as the study's evaluation and `fedray predict` do: load the CT, reorient to RAS"
        + (f", resample to {list(pre.spacing)} mm (bilinear)" if pre.spacing is not None else "")
        + f", window HU to [{config.data.hu_window[0]:g}, {config.data.hu_window[1]:g}] scaled to [-1, 1]"
        + (", crop to the body (voxels above the window's low end)" if pre.crop_foreground else "")
        + f"; sliding-window inference (roi {list(config.eval.roi_size)}, overlap {config.eval.overlap}, "
        f"{config.eval.mode} blending, {config.eval.sw_batch_size} windows a batch); "
        + ("softmax over background and organs, each voxel the most probable organ where its probability is "
           "> 0.5, else background" if config.model.output == "softmax"
           else "each voxel the organ with the largest logit where it is > 0, else background")
        + "; the label map resampled (nearest) from the preprocessed grid straight back onto the input's "
        "grid, background outside the crop. `fedray predict RUN_DIR` gives the same label maps, voxel for "
        "voxel.",
        "",
        "The way back is one resampling (MONAI `ResampleToMatchd` onto the loaded image), as the study's "
        "evaluation maps its predictions before scoring, not MONAI's `Invertd`: undoing each step in turn "
        "(crop, spacing, orientation) gives the same map except where an input voxel lies exactly halfway "
        "between two preprocessed voxels, where the two routes' rounding noise picks different neighbours "
        "(e.g. 7.5 mm slices resampled to 9 mm).",
        "",
        "`models/model.pt` is the network's `state_dict` (plain tensors, `torch.load(..., weights_only=True)`); "
        "`network_def` in `configs/inference.json` builds the network it fits.",
        "",
    ]
    return "\n".join(lines)
