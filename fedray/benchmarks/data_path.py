"""`fedray bench data-path`: patch sampling (MONAI chain vs the case store), a local step vs the bare step, peak memory.

Sampler: a batch of two patches, old path (SpatialPadd + RandCropByPosNegLabeld on the in-memory
case, as fedray sampled before the case store) against the new one (plain indexing of the
memory-mapped stored case with its stored foreground), at 64^3 on a clinical-size case after
`spacing: [1.5, 1.5, 3.0]` and at 32^3 on a 64x64x48 phantom. Step: one step of the shared local
loop as a hospital actor runs it (patches from the store, prepared one batch ahead, FedAvg's hooks,
the study optimiser) against the bare network step (forward, the same loss, backward, SGD step) on
one in-memory batch, 1 thread. Memory: peak PSS of the whole process tree of a short study on
clinical-size synthetic MSD sites, at two numbers of cases per site. Checks: the pre-Ray case checks
of those studies, every file read in full, then with every case remembered (headers only).
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from pathlib import Path

import numpy as np

from fedray.config import ORGANS, StudyConfig, config_from_data, with_absolute_paths
from fedray.data.phantom import PhantomSpec, ScannerProfile, generate_case
from fedray.data.msd_writer import start_msd_folder, write_msd_case, write_msd_manifest
from fedray.organs import organ_label

CLINICAL = PhantomSpec(shape=(512, 512, 112), spacing=(0.78, 0.78, 2.5))  # 400 x 400 x 280 mm
MODEL = {"name": "unet", "channels": [8, 16, 32, 64], "strides": [2, 2, 2], "num_res_units": 0}


def write_clinical_sites(
    root: Path, sites: int, cases: int, test_cases: int, distinct: int = 2, seed: int = 0
) -> tuple[list[Path], Path]:
    """MSD sites of clinical-size int16 volumes (512x512x112), fully labelled, plus a small test set.

    `distinct` volumes are generated; further cases are copies of their files under other names (a
    copy is another case to the store: its own key, preprocessed and stored on its own). The test
    set is 64x64x48 phantoms, so the study's evaluation (HD95 on the original grid) stays short.
    """
    labels = {str(organ_label(o)): o for o in ORGANS}
    bases = root / "bases"
    if not (bases / "dataset.json").exists():
        start_msd_folder(bases)
        training = [
            write_msd_case(bases, f"base_{i}", *generate_case(np.random.default_rng([seed, i]), CLINICAL,
                                                             ScannerProfile()), CLINICAL.affine)
            for i in range(distinct)
        ]
        write_msd_manifest(bases, name="bases", description="clinical-size phantoms", labels=labels,
                           training=training, fedray={})
    folders = []
    for s in range(sites):
        folder = root / f"site_{s}_{cases}"
        folders.append(folder)
        if (folder / "dataset.json").exists():
            continue
        start_msd_folder(folder)
        training = []
        for i in range(cases):
            entry = {"image": f"./imagesTr/c{i:03d}.nii.gz", "label": f"./labelsTr/c{i:03d}.nii.gz"}
            base = (s * cases + i) % distinct
            shutil.copy(bases / "imagesTr" / f"base_{base}.nii.gz", folder / entry["image"])
            shutil.copy(bases / "labelsTr" / f"base_{base}.nii.gz", folder / entry["label"])
            training.append(entry)
        write_msd_manifest(folder, name=folder.name, description="copies of clinical-size phantoms",
                           labels=labels, training=training, fedray={})
    test = root / "test"
    if not (test / "dataset.json").exists():
        small = PhantomSpec(shape=(64, 64, 48), spacing=(6.0, 5.0, 5.0))
        start_msd_folder(test)
        training = [
            write_msd_case(test, f"t{i}", *generate_case(np.random.default_rng([seed, 100 + i]), small,
                                                        ScannerProfile()), small.affine)
            for i in range(test_cases)
        ]
        write_msd_manifest(test, name="test", description="small phantoms", labels=labels, training=training,
                           fedray={})
    return folders, test


def study_config(
    work: Path, sites: list[Path], test: Path, name: str, rounds: int = 2, clinical: bool = True
) -> StudyConfig:
    """The issue's setting: spacing [1.5, 1.5, 3.0], body crop, 64^3 patches, benchmark U-Net, 1 CPU per actor
    (`clinical=False`: the phantom's own grid and 32^3 patches)."""
    return with_absolute_paths(config_from_data({
        "name": name,
        "rounds": rounds,
        "data": {
            "source": "msd", "cache_dir": str(work / "cache"), "sites": [str(s) for s in sites],
            "test_set": str(test), "patch_size": [64, 64, 64] if clinical else [32, 32, 32],
            "preprocess": {"spacing": [1.5, 1.5, 3.0], "crop_foreground": True} if clinical else {},
        },
        "model": MODEL,
        "method": {"name": "fedavg"},
        "train": {"local_steps": 4, "batch_size": 2, "lr": 0.01},
        "eval": {"every": rounds, "roi_size": [32, 32, 32]},
        "resources": {"num_cpus": 2, "cpus_per_actor": 1},
        "tracking": {"results_dir": str(work / "runs"), "uri": f"sqlite:///{work}/runs/mlflow.db",
                     "experiment": "bench_data_path", "run_name": name, "checkpoint_every": 0},
    }))


def time_samplers(case_dict: dict, stored, patch: int, batches: int) -> dict:
    """Median seconds per batch of two patches: MONAI's chain on the in-memory case vs the store's view."""
    import torch
    from monai.transforms import Compose, RandCropByPosNegLabeld, SpatialPadd

    from fedray.data.patches import PatchSampler

    size = (patch, patch, patch)
    chain = Compose([
        SpatialPadd(keys=["image", "label"], spatial_size=size),
        RandCropByPosNegLabeld(keys=["image", "label"], label_key="label", spatial_size=size, pos=0.8, neg=0.2,
                               num_samples=1, allow_smaller=False),
    ])
    chain.set_random_state(seed=0)
    rng = np.random.default_rng(0)

    def old_batch() -> None:  # the pre-store PatchSampler's loop
        patches = [chain({"image": case_dict["image"], "label": case_dict["label"]})[0]
                   for _ in rng.integers(1, size=2)]
        torch.stack([torch.as_tensor(p["image"]) for p in patches]).float()
        torch.stack([torch.as_tensor(p["label"]) for p in patches]).long()

    new = PatchSampler(size, 0.8, 2).batches([stored], 0)
    old_s, new_s = [], []
    for _ in range(batches):  # interleaved, so both see the same machine load
        start = time.perf_counter()
        old_batch()
        old_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        next(new)
        new_s.append(time.perf_counter() - start)
    return {"patch": patch, "volume": list(stored.label.shape), "batches": batches,
            "monai_s_median": statistics.median(old_s), "store_s_median": statistics.median(new_s),
            "speedup": statistics.median(old_s) / statistics.median(new_s)}


def time_steps(stored, patch: int, steps: int, repeats: int) -> dict:
    """Median seconds per step: the hospital actor's local loop (store patches drawn as a CPU actor draws
    them, hooks) vs the bare step."""
    import torch

    from fedray.config import MethodConfig, ModelConfig
    from fedray.data.patches import PatchSampler, first_batches
    from fedray.models.factory import build_model
    from fedray.strategies import build_strategy
    from fedray.training.hooks import ClientContext
    from fedray.training.local import make_optimizer, train_locally

    torch.set_num_threads(1)
    n_organs = len(ORGANS)
    torch.manual_seed(0)
    model = build_model(ModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in MODEL.items()}),
                        n_organs)
    strategy = build_strategy(MethodConfig(name="fedavg"))
    strategy.setup(list(ORGANS), (), model)
    sampler = PatchSampler((patch,) * 3, 0.8, 2)
    hooks = strategy.client_hooks(ClientContext(
        hospital_id="h", round=1, labelled=(True,) * n_organs, output="softmax", extras={}, client_state=None,
        lr=0.01, local_steps=steps,
    ))
    batch = next(sampler.batches([stored], 0))
    local_s, bare_s = [], []
    for repeat in range(repeats + 1):  # the first of each is a warm-up
        optimizer = make_optimizer(model, "sgd", 0.01, 0.0, 0.0)
        start = time.perf_counter()
        with first_batches(sampler.batches([stored], repeat), steps, prefetch=False) as batches:
            train_locally(model, batches, steps, optimizer, hooks)
        local = (time.perf_counter() - start) / steps
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        start = time.perf_counter()
        for _ in range(steps):
            loss = hooks.supervised_loss(model(batch.image), batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        bare = (time.perf_counter() - start) / steps
        if repeat:
            local_s.append(local)
            bare_s.append(bare)
    return {"patch": patch, "batch": 2, "steps": steps, "repeats": repeats,
            "local_step_s_median": statistics.median(local_s), "bare_step_s_median": statistics.median(bare_s),
            "ratio": statistics.median(local_s) / statistics.median(bare_s)}


def peak_study(config: StudyConfig) -> dict:
    """Peak PSS/RSS of the whole process tree over one study, the preprocessing step (if any case was
    missing from the store) apart from the rest: the peaks are reset when the last case is written."""
    from fedray.benchmarks.scale import PeakMemory
    from fedray.simulation.run import run_experiment

    shutil.rmtree(config.run_dir, ignore_errors=True)
    marks: list[float] = []
    preprocess_peak = {}
    with PeakMemory() as memory:

        def preprocessed(done: int, total: int) -> None:
            marks.append(time.perf_counter())
            if done == total:
                memory.sample()
                preprocess_peak.update(pss=memory.peak_pss, rss=memory.peak_rss)
                memory.peak_pss = memory.peak_rss = 0

        start = time.perf_counter()
        for attempt in range(3):  # on a loaded machine Ray's raylet may miss its fixed 30 s start window
            try:
                summary = run_experiment(config, on_preprocess=preprocessed)
                break
            except Exception as error:  # noqa: BLE001 - only Ray's start-up timeout is retried
                if "timed out during startup" not in str(error) or attempt == 2:
                    raise
                shutil.rmtree(config.run_dir, ignore_errors=True)
                start = time.perf_counter()
        wall = time.perf_counter() - start
    cases = len(marks) - 1
    return {
        "sites": len(config.data.sites), "cases_per_site": _cases(config), "preprocessed_cases": max(cases, 0),
        "preprocess_s_per_case": (marks[-1] - marks[0]) / cases if cases > 0 else None,
        "preprocess_peak_pss_gb": preprocess_peak["pss"] / 1e9 if preprocess_peak else None,
        "peak_pss_gb": memory.peak_pss / 1e9, "peak_rss_gb": memory.peak_rss / 1e9, "wall_s": wall,
        "rounds": config.rounds, "local_steps": config.train.local_steps, "dice_mean": summary.get("dice/mean"),
    }


def time_checks(config: StudyConfig) -> dict:
    """Seconds of the case checks before Ray starts (`prepare_hospitals`): first with no case remembered
    (every file read in full, as a first start), then with all of them remembered (a later start)."""
    from fedray.data.federation import prepare_hospitals
    from fedray.data.validation import CHECKS_FOLDER

    checks = Path(config.data.cache_dir) / CHECKS_FOLDER
    shutil.rmtree(checks, ignore_errors=True)
    start = time.perf_counter()
    prepare_hospitals(config)
    full = time.perf_counter() - start
    start = time.perf_counter()
    prepare_hospitals(config)
    headers = time.perf_counter() - start
    return {"sites": len(config.data.sites), "cases_per_site": _cases(config),
            "cases_checked": len(list(checks.iterdir())),  # the sites' and the test set's, each remembered once
            "full_s": full, "headers_only_s": headers}


def _cases(config: StudyConfig) -> int:
    return len(json.loads((Path(config.data.sites[0].path) / "dataset.json").read_text())["training"])


def plot(record: dict, path: Path) -> None:
    """Three panels of a data-path record: peak memory against cases per site (with the 3 GB target),
    the pre-Ray case checks in full and remembered, and a local step against the bare step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (memory, checks, step) = plt.subplots(1, 3, figsize=(15, 4.2))
    latest = max((m.get("session", 0) for m in record.get("memory", [])), default=0)
    runs = [m for m in record.get("memory", []) if m.get("session", 0) == latest and not m.get("preprocessed_cases")]
    runs = runs or record.get("memory", [])
    memory.bar([str(m["cases_per_site"]) for m in runs], [m["peak_pss_gb"] for m in runs], color="tab:blue")
    memory.axhline(3.0, color="tab:red", linestyle="--", label="target 3 GB")
    memory.set(xlabel="cases per site (3 sites)", ylabel="peak PSS of the process tree (GB)",
               title="Memory of a study, cases stored")
    memory.legend(loc="lower right")
    timed = record.get("checks", [])
    labels = [f"{c['cases_checked']} cases" for c in timed]
    positions = range(len(timed))
    checks.bar([x - 0.2 for x in positions], [c["full_s"] for c in timed], 0.4, label="every file in full")
    checks.bar([x + 0.2 for x in positions], [c["headers_only_s"] for c in timed], 0.4, label="remembered: headers only")
    checks.set(xticks=list(positions), yscale="log", ylabel="seconds before Ray starts", title="Case checks")
    checks.set_xticklabels(labels)
    checks.legend(loc="upper left", fontsize="small")
    steps = record.get("step_session7") or record.get("step") or []
    steps = steps if isinstance(steps, list) else [steps]
    names = [f"{s['patch']}³" for s in steps]
    positions = range(len(steps))
    step.bar([x - 0.2 for x in positions], [s["local_step_s_median"] for s in steps], 0.4, label="fedray's local step")
    step.bar([x + 0.2 for x in positions], [s["bare_step_s_median"] for s in steps], 0.4, label="bare network step")
    step.set(xticks=list(positions), ylabel="seconds per step (median)", title="A local step against the bare step")
    step.set_xticklabels(names)
    step.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
