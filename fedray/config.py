"""The study configuration: frozen dataclasses validated at load, YAML files plus `a.b=value` overrides."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from fedray.configtypes import build, require, to_data
from fedray.errors import ConfigError, did_you_mean
from fedray.methods import method_spec
from fedray.organs import ORGANS, STRUCTURES


@dataclass(frozen=True)
class PhantomConfig:
    """Size of the synthetic CT phantom volumes and of its held-out test set."""

    shape: tuple[int, int, int] = (64, 64, 48)
    spacing: tuple[float, float, float] = (6.0, 5.0, 5.0)
    test_cases: int = 4
    seed: int = 0  # data seed, separate from the training seed so seeds compare on the same data

    def __post_init__(self) -> None:
        require(all(s >= 16 for s in self.shape), "phantom.shape: every size must be >= 16 voxels.")
        require(all(s > 0 for s in self.spacing), "phantom.spacing: every spacing must be > 0 mm.")
        require(self.test_cases >= 1, "phantom.test_cases must be >= 1.")


@dataclass(frozen=True)
class SiteConfig:
    """One real data site: an MSD folder or a CSV of image,label paths, its label map, and its split.

    Attributes:
        path: an MSD folder (with dataset.json) or a .csv file with columns image,label (paths
            relative to the CSV file).
        format: msd or csv; inferred from the path (a .csv suffix means csv).
        name: hospital id (default: the folder name, or the CSV file's stem).
        labels: the site's label value -> global organ or tumour name (`fedray.organs.STRUCTURES`,
            e.g. {1: liver, 2: liver_tumour} for MSD Task03), or null for a value that is not
            trained on. Replaces dataset.json's names; values it leaves out are not trained on.
        organs: global organs the site annotates (default: every organ `labels` names).
        split: deal the site's cases into this many hospitals `<name>-<j>` (deterministic).
    """

    path: str
    format: Literal["msd", "csv"] | None = None
    name: str | None = None
    labels: dict[int, str | None] | None = None
    organs: tuple[str, ...] | None = None
    split: int = 1

    def __post_init__(self) -> None:
        if self.format is None:
            object.__setattr__(self, "format", "csv" if self.path.lower().endswith(".csv") else "msd")
        require(self.split >= 1, f"site '{self.path}': split must be >= 1, got {self.split}.")
        require(self.name is None or bool(self.name.strip()), f"site '{self.path}': name must not be empty.")
        if self.labels is not None:
            labels = {}
            for value, organ in self.labels.items():
                try:
                    number = int(value)
                except (TypeError, ValueError):
                    number = -1
                require(
                    number >= 0 and str(number) == str(value).strip(),
                    f"site '{self.path}': label value {value!r} must be a whole number >= 0.",
                )
                require(
                    organ is None or (isinstance(organ, str) and organ in STRUCTURES),
                    f"site '{self.path}': labels maps {number} to unknown organ {organ!r}."
                    f"{did_you_mean(str(organ), STRUCTURES)} Use a global organ or tumour name "
                    f"({', '.join(STRUCTURES)}) or null for a value that is not trained on.",
                )
                labels[number] = organ
            object.__setattr__(self, "labels", labels)
        if self.organs is not None:
            for organ in self.organs:
                require(
                    organ in STRUCTURES,
                    f"site '{self.path}': organs lists unknown organ '{organ}'.{did_you_mean(organ, STRUCTURES)}",
                )
            require(len(set(self.organs)) == len(self.organs), f"site '{self.path}': organs lists an organ twice.")
            if self.labels is not None:
                unmapped = [o for o in self.organs if o not in self.labels.values()]
                require(
                    not unmapped,
                    f"site '{self.path}': organs declares {', '.join(unmapped)}, but labels maps no value to "
                    "it. Add the value to labels, or remove the organ from organs.",
                )
        require(
            self.format == "msd" or self.labels is not None,
            f"site '{self.path}': a CSV site needs a labels map (value: organ), since it has no dataset.json.",
        )


@dataclass(frozen=True)
class AugmentConfig:
    """Random changes to sampled training patches; every probability 0 (the default) means none."""

    flip_prob: float = 0.0  # per axis: each of x, y, z is flipped with this probability
    intensity_prob: float = 0.0  # probability of each of the scale and the shift below
    intensity_scale: float = 0.1  # image * (1 + U(-s, s))
    intensity_shift: float = 0.1  # image + U(-s, s), in windowed units (the window spans [-1, 1])
    affine_prob: float = 0.0  # probability of a random rotation and zoom (MONAI RandAffined)
    rotate_deg: float = 15.0  # rotation about each axis drawn from U(-r, r) degrees
    zoom: float = 0.1  # scale factor per axis drawn from 1 + U(-z, z)

    def __post_init__(self) -> None:
        for name in ("flip_prob", "intensity_prob", "affine_prob"):
            require(0.0 <= getattr(self, name) <= 1.0, f"{name} must be in [0, 1].")
        for name in ("intensity_scale", "intensity_shift", "rotate_deg", "zoom"):
            require(getattr(self, name) >= 0.0, f"{name} must be >= 0.")
        require(self.zoom < 1.0, "zoom must be < 1 (a scale factor must stay positive).")

    @property
    def enabled(self) -> bool:
        """Whether any augmentation can happen."""
        return max(self.flip_prob, self.intensity_prob, self.affine_prob) > 0.0


@dataclass(frozen=True)
class PreprocessConfig:
    """CT preprocessing beyond the HU window; the defaults (none of it) keep the original voxel grid.

    Attributes:
        spacing: resample to these voxel sizes in mm (x, y, z after reorientation to RAS); image
            bilinear, label nearest. null keeps each volume's own spacing.
        crop_foreground: crop each volume to the bounding box of the body (voxels above the HU
            window's low end), so patches and sliding windows skip the air around the patient.
        augment: random changes applied to training patches after they are sampled.
    """

    spacing: tuple[float, float, float] | None = None
    crop_foreground: bool = False
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        require(
            self.spacing is None or all(s > 0 for s in self.spacing),
            "spacing: every value must be > 0 mm.",
        )


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how training patches are drawn."""

    source: Literal["phantom", "msd"] = "phantom"
    cache_dir: str = "results/data"
    sites: tuple[str | SiteConfig, ...] = ()  # a string is shorthand for {path: <folder>}
    test_set: str | None = None
    on_bad_case: Literal["fail", "skip"] = "fail"  # skip: leave bad cases out, and report them
    # The study's structures: the 7 organs by default; tumours (fedray.organs.TUMOURS) may be added.
    organs: tuple[str, ...] = ORGANS
    phantom: PhantomConfig = field(default_factory=PhantomConfig)
    hu_window: tuple[float, float] = (-325.0, 325.0)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    persistent_cache: bool = True  # remember file checksums (cache_dir/checksums.sqlite); cases always go to cache_dir/cases
    patch_size: tuple[int, int, int] = (32, 32, 32)
    foreground_ratio: float = 0.8

    def __post_init__(self) -> None:
        # One form downstream: every site becomes a SiteConfig.
        object.__setattr__(
            self, "sites", tuple(SiteConfig(path=s) if isinstance(s, str) else s for s in self.sites)
        )
        require(len(self.organs) > 0, "data.organs must list at least one organ.")
        for organ in self.organs:
            require(
                organ in STRUCTURES,
                f"data.organs: unknown organ '{organ}'.{did_you_mean(organ, STRUCTURES)} "
                f"Known: {', '.join(STRUCTURES)}.",
            )
        require(len(set(self.organs)) == len(self.organs), "data.organs lists an organ twice.")
        require(self.hu_window[0] < self.hu_window[1], "data.hu_window must be [low, high] with low < high.")
        require(0.0 <= self.foreground_ratio <= 1.0, "data.foreground_ratio must be in [0, 1].")
        require(all(p >= 8 for p in self.patch_size), "data.patch_size: every size must be >= 8.")
        if self.source == "msd":
            require(
                len(self.sites) > 0, "data.sites must list at least one site (MSD folder or CSV file) when source is msd."
            )
            require(self.test_set is not None, "data.test_set must name a fully-labelled MSD folder.")


@dataclass(frozen=True)
class HospitalConfig:
    """One hospital of a phantom study: the organs it labels and how many cases it holds."""

    organs: tuple[str, ...]
    cases: int = 4
    name: str | None = None

    def __post_init__(self) -> None:
        require(len(self.organs) > 0, "a hospital must label at least one organ.")
        require(self.cases >= 1, "a hospital must hold at least 1 case.")


@dataclass(frozen=True)
class HospitalRule:
    """Hundreds of hospitals by rule: hospital i labels organs i*k .. i*k+k-1 (cyclically)."""

    count: int
    organs_per_hospital: int = 1
    cases: int = 4

    def __post_init__(self) -> None:
        require(self.count >= 1, "rule.count must be >= 1.")
        require(self.organs_per_hospital >= 1, "rule.organs_per_hospital must be >= 1.")
        require(self.cases >= 1, "rule.cases must be >= 1.")


@dataclass(frozen=True)
class FederationConfig:
    """The hospitals (explicit list or rule) and how many take part in each round."""

    hospitals: tuple[HospitalConfig, ...] = ()
    rule: HospitalRule | None = None
    clients_per_round: int | None = None
    pooled: bool = False  # centralised reference: one client holds every hospital's (partial) cases
    local_validation: int = 0  # cases held out of each hospital's training, scored on its own organs (0: off)

    def __post_init__(self) -> None:
        require(self.local_validation >= 0, "federation.local_validation must be >= 0 (0 holds out nothing).")
        require(
            not (self.hospitals and self.rule),
            "federation: give either 'hospitals' (a list) or 'rule', not both.",
        )
        require(
            self.clients_per_round is None or self.clients_per_round >= 1,
            "federation.clients_per_round must be >= 1 (or null for all hospitals).",
        )


@dataclass(frozen=True)
class ModelConfig:
    """Network: a MONAI U-Net, or the paper's residual U-Net backbone.

    `multihead_unet` with `output: sigmoid` is Kim et al.'s model (one small sigmoid head per organ on
    a shared embedding); with `output: softmax` the same backbone ends in one softmax head over
    background + organs (the paper's single-classifier baseline), so methods compare on one backbone.
    """

    name: Literal["unet", "multihead_unet"] = "unet"
    output: Literal["softmax", "sigmoid"] = "softmax"
    channels: tuple[int, ...] = (8, 16, 32, 64)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = 1
    blocks: tuple[int, ...] = ()
    norm_groups: int = 4

    def __post_init__(self) -> None:
        require(len(self.channels) >= 2, "model.channels needs at least 2 levels.")
        require(all(c >= 1 for c in self.channels), "model.channels must be positive.")
        if self.name == "unet":
            require(
                len(self.strides) == len(self.channels) - 1,
                f"model.strides needs {len(self.channels) - 1} values (one per downsampling of "
                f"model.channels), got {len(self.strides)}.",
            )
        else:
            require(
                not self.blocks or len(self.blocks) == len(self.channels),
                "model.blocks needs one value per level of model.channels.",
            )
            require(all(b >= 1 for b in self.blocks), "model.blocks must be >= 1.")
            for width in self.channels:
                groups = min(self.norm_groups, width)
                require(
                    width % groups == 0,
                    f"model.norm_groups: {groups} GroupNorm groups do not divide {width} channels.",
                )

    @property
    def downsampling(self) -> int:
        """Total downsampling factor: patch and ROI sizes must be multiples of it."""
        if self.name == "unet":
            return math.prod(self.strides)
        return 2 ** (len(self.channels) - 1)


@dataclass(frozen=True)
class ServerOptimizerConfig:
    """FedOpt (Reddi et al., 2021): apply the averaged update as a pseudo-gradient with a server optimiser.

    'none' takes the aggregate as the new global model (FedAvg); 'sgd' with lr 1 and momentum 0 is
    the same thing; momentum > 0 gives FedAvgM; 'adam' and 'yogi' give FedAdam and FedYogi.
    """

    name: Literal["none", "sgd", "adam", "yogi"] = "none"
    lr: float = 1.0
    momentum: float = 0.0
    betas: tuple[float, float] = (0.9, 0.99)
    eps: float = 1e-3

    def __post_init__(self) -> None:
        require(self.lr > 0, "server.lr must be > 0.")
        require(0 <= self.momentum < 1, "server.momentum must be in [0, 1).")
        require(all(0 <= b < 1 for b in self.betas), "server.betas must be in [0, 1).")
        require(self.eps > 0, "server.eps must be > 0.")


@dataclass(frozen=True)
class MethodConfig:
    """The federated method (a registered strategy), its parameters and its server optimiser."""

    name: str = "fedavg"
    params: Any = field(default_factory=dict)
    server: ServerOptimizerConfig = field(default_factory=ServerOptimizerConfig)


@dataclass(frozen=True)
class TrainConfig:
    """Local training on each hospital in each round."""

    local_steps: int = 10
    batch_size: int = 2
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = 1e-3
    lr_schedule: Literal["constant", "poly"] = "constant"  # poly: lr * (1 - (r-1)/R)^0.9, as in the paper
    momentum: float = 0.9
    weight_decay: float = 0.0

    def lr_at(self, round_index: int, rounds: int) -> float:
        """Learning rate of round `round_index` (1-based) out of `rounds`."""
        if self.lr_schedule == "constant":
            return self.lr
        return self.lr * (1 - (round_index - 1) / rounds) ** 0.9

    def __post_init__(self) -> None:
        require(self.local_steps >= 1, "train.local_steps must be >= 1.")
        require(self.batch_size >= 1, "train.batch_size must be >= 1.")
        require(self.lr > 0, "train.lr must be > 0.")


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation of the global model on the fully-labelled held-out set."""

    every: int = 1
    roi_size: tuple[int, int, int] = (32, 32, 32)
    overlap: float = 0.5
    sw_batch_size: int = 4
    mode: Literal["gaussian", "constant"] = "gaussian"
    nsd_tolerance_mm: float = 2.0  # normalised surface Dice (cases.csv): surfaces within this many mm agree
    # Plateau rule (summary.json rounds_to_plateau, fedray.tracking.plateau): the median of the
    # mean-Dice evaluations in the last plateau_window rounds is less than plateau_tolerance above the
    # median of those in the plateau_window rounds before them.
    plateau_window: int = 30
    plateau_tolerance: float = 0.01
    plateau_min_rounds: int = 0  # no plateau before this round (a curve may sit flat early, then rise)
    # Stop the study at the first evaluated round that meets the plateau rule (`rounds` is then the
    # cap; the poly learning-rate schedule still runs over `rounds`). Off: every round is trained.
    stop_at_plateau: bool = False

    def __post_init__(self) -> None:
        require(self.every >= 1, "eval.every must be >= 1.")
        require(self.plateau_window >= 1, "eval.plateau_window must be >= 1.")
        require(self.plateau_tolerance >= 0, "eval.plateau_tolerance must be >= 0.")
        require(self.plateau_min_rounds >= 0, "eval.plateau_min_rounds must be >= 0.")
        require(self.nsd_tolerance_mm > 0, "eval.nsd_tolerance_mm must be > 0.")
        require(0.0 <= self.overlap < 1.0, "eval.overlap must be in [0, 1).")


def _check_share(cpus: float, gpus: float, where: str) -> None:
    require(cpus > 0, f"{where} CPUs must be > 0.")
    require(0 <= gpus <= 1 or gpus == int(gpus), f"{where} GPUs must be a fraction in [0, 1] or a whole number.")


@dataclass(frozen=True)
class HospitalResources:
    """A hospital that gets an actor of its own with these resources (a large site on a whole GPU)."""

    cpus: float = 1.0
    gpus: float = 0.0

    def __post_init__(self) -> None:
        _check_share(self.cpus, self.gpus, "resources.hospitals:")


@dataclass(frozen=True)
class ResourcesConfig:
    """Ray: which cluster, what each hospital actor gets, and how actors are placed.

    Attributes:
        actors: hospital actors sharing the hospitals without an override (default: as many as fit).
        cpus_per_actor, gpus_per_actor: each such actor's share; 0.25 GPUs packs four on one GPU.
        hospitals: per-hospital overrides by hospital id; each gets its own actor with those resources.
        placement: Ray placement-group strategy for the actors' bundles (PACK fills nodes in turn,
            SPREAD spreads over nodes; STRICT_ variants fail rather than bend).
        placement_timeout_s: how long to wait for the cluster to hold every bundle before giving up.
        scheduling: dynamic hands each idle actor the round's next hospital (its data, loaded once by
            its home actor into Ray's object store, is read zero-copy on the same node and copied
            across nodes); pinned always trains a hospital on its home actor, so data never moves.
            Hospitals with an override always train on their own actor.
        hospitals_per_call: hospitals one remote training call carries (default: chosen per round,
            up to 10, fewer as the round runs out; one when the method does not pre-sum updates on
            the actors). Never more than an even share of the hospitals left, so small rounds spread.
        fused_optimizer: torch's fused optimiser kernels (one kernel over all parameters, on CPU
            and CUDA) for local training: the same maths, rounded in another order (weights equal
            to the last bits; SGD without weight decay bit for bit). false: torch's default
            for-loop kernels, as before session 9 (the #17 sweeps keep them, so that their
            resumed cells train on as they started).
    """

    address: str | None = None
    num_cpus: int | None = None
    num_gpus: float | None = None
    actors: int | None = None
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    hospitals: dict[str, HospitalResources] = field(default_factory=dict)
    placement: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    placement_timeout_s: float = 120.0
    scheduling: Literal["dynamic", "pinned"] = "dynamic"
    hospitals_per_call: int | None = None
    fused_optimizer: bool = True
    dashboard: bool = False

    def __post_init__(self) -> None:
        _check_share(self.cpus_per_actor, self.gpus_per_actor, "resources.cpus_per_actor/gpus_per_actor:")
        require(self.actors is None or self.actors >= 1, "resources.actors must be >= 1.")
        require(
            self.hospitals_per_call is None or self.hospitals_per_call >= 1,
            "resources.hospitals_per_call must be >= 1.",
        )
        require(self.placement_timeout_s > 0, "resources.placement_timeout_s must be > 0.")

    def actors_fitting(self, cpus: float, gpus: float) -> int:
        """How many actors of `cpus_per_actor` (and `gpus_per_actor`) fit in `cpus` CPUs and `gpus` GPUs."""
        # The 1e-9 keeps float division from losing one actor (0.3 CPUs hold three of 0.1).
        fit = math.floor(cpus / self.cpus_per_actor + 1e-9)
        if self.gpus_per_actor > 0:
            fit = min(fit, math.floor(gpus / self.gpus_per_actor + 1e-9))
        return fit


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow store and the run's results folder."""

    uri: str | None = None
    experiment: str = "fedray"
    results_dir: str = "results"
    run_name: str | None = None
    parent_run_id: str | None = None  # set by `fedray sweep`: cells are children of the sweep's run
    checkpoint_every: int = 1  # rounds between checkpoints; 0 = none (the last round is always saved)
    keep_every: int = 0  # also keep checkpoints/round_NNNNNN.npz every this many rounds (fedray predict --round)
    log_model: bool = True  # log the model to the MLflow run at the end (and at each kept round) as a pyfunc
    register_as: str | None = None  # also register the final model under this name in MLflow's registry
    # A RUNNING run of the experiment owned by another host whose last round ended longer ago is
    # marked KILLED by the next study (0: never; runs of this host are judged by their process).
    stale_after_s: float = 21600.0

    def __post_init__(self) -> None:
        require(self.checkpoint_every >= 0, "tracking.checkpoint_every must be >= 0.")
        require(self.stale_after_s >= 0, "tracking.stale_after_s must be >= 0 (0: never judge a run by its heartbeat).")
        require(self.keep_every >= 0, "tracking.keep_every must be >= 0.")
        require(
            self.register_as is None or (isinstance(self.register_as, str) and self.register_as.strip() != ""),
            "tracking.register_as must be a non-empty model name (or null for no registration).",
        )
        require(
            self.register_as is None or self.log_model,
            "tracking.register_as needs tracking.log_model: true (only a logged model can be registered).",
        )


@dataclass(frozen=True)
class FaultsConfig:
    """Real failures (retries) and simulated ones (dropout, stragglers, a deadline), seeded per round.

    Attributes:
        max_retries: a hospital task whose actor dies or whose training raises is retried this many
            times (on a fresh actor if the old one died), then the hospital is dropped from the round.
        dropout: probability that a sampled hospital does not take part in a round.
        straggler_fraction: probability that a hospital is a straggler in a round.
        straggler_slowdown: a straggler's local update counts as this many times its measured time.
        deadline_s: updates whose (slowed) local time exceeds this are discarded as late; null = none.
            Measured times vary from run to run, so a deadline makes a study timing-dependent.
    """

    max_retries: int = 2
    dropout: float = 0.0
    straggler_fraction: float = 0.0
    straggler_slowdown: float = 1.0
    deadline_s: float | None = None

    def __post_init__(self) -> None:
        require(self.max_retries >= 0, "faults.max_retries must be >= 0.")
        require(0.0 <= self.dropout < 1.0, "faults.dropout must be in [0, 1).")
        require(0.0 <= self.straggler_fraction <= 1.0, "faults.straggler_fraction must be in [0, 1].")
        require(self.straggler_slowdown >= 1.0, "faults.straggler_slowdown must be >= 1.")
        require(self.deadline_s is None or self.deadline_s > 0, "faults.deadline_s must be > 0.")


@dataclass(frozen=True)
class StudyConfig:
    """One whole federated study."""

    name: str
    seed: int = 0
    rounds: int = 10
    data: DataConfig = field(default_factory=DataConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    faults: FaultsConfig = field(default_factory=FaultsConfig)

    def __post_init__(self) -> None:
        require(bool(self.name.strip()), "name must not be empty.")
        require(self.rounds >= 1, f"rounds must be >= 1, got {self.rounds}.")
        require(self.seed >= 0, f"seed must be >= 0, got {self.seed}.")
        for label, sizes in (("data.patch_size", self.data.patch_size), ("eval.roi_size", self.eval.roi_size)):
            factor = self.model.downsampling
            require(
                all(s % factor == 0 for s in sizes),
                f"{label} {list(sizes)} must be multiples of {factor}, the model's total downsampling.",
            )
        for hospital in self.federation.hospitals:
            for organ in hospital.organs:
                require(
                    organ in self.data.organs,
                    f"federation.hospitals: organ '{organ}' is not a study organ."
                    f"{did_you_mean(organ, self.data.organs)} Study organs: {', '.join(self.data.organs)}.",
                )
        if self.data.source == "phantom":
            require(
                bool(self.federation.hospitals) or self.federation.rule is not None,
                "federation: a phantom study needs 'hospitals' or 'rule'.",
            )
            self._check_patch_fits_the_phantom()
        federation = self.federation
        known = len(federation.hospitals) or (federation.rule.count if federation.rule else 0)  # 0: from the sites
        require(
            federation.clients_per_round is None or federation.pooled or not known
            or federation.clients_per_round <= known,
            f"federation.clients_per_round is {federation.clients_per_round}, but the study has only {known} "
            f"hospital(s): set it to at most {known}, or null for all of them.",
        )

    def _check_patch_fits_the_phantom(self) -> None:
        """A training patch or sliding window larger than the (resampled) volumes would be mostly padding
        and slow every step, so it is refused rather than padded (real sites: `check_volume_sizes`)."""
        phantom, target = self.data.phantom, self.data.preprocess.spacing
        # MONAI's Spacing: round((n - 1) * s / t + 1) voxels (validation.resampled_size)
        size = [
            round((n - 1) * s / t + 1) if target else n
            for n, s, t in zip(phantom.shape, phantom.spacing, target or phantom.spacing)
        ]
        windows = (("data.patch_size", self.data.patch_size, "patch"), ("eval.roi_size", self.eval.roi_size, "window"))
        for key, window, use in windows:
            require(
                all(p <= n for p, n in zip(window, size)),
                f"{key} {list(window)} is larger than the phantom volumes ({size} voxels"
                f"{' after resampling to data.preprocess.spacing' if target else ''}): use a {use} of at most that "
                "size in every axis, or a larger data.phantom.shape.",
            )

    @property
    def run_name(self) -> str:
        """MLflow run name and results folder name."""
        return self.tracking.run_name or self.name

    @property
    def run_dir(self) -> Path:
        """results/<run_name>/."""
        return Path(self.tracking.results_dir) / self.run_name


def with_absolute_paths(config: StudyConfig) -> StudyConfig:
    """Resolve the config's relative paths against the current directory (actors may run elsewhere)."""
    data = config.data
    return replace(
        config,
        data=replace(
            data,
            cache_dir=str(Path(data.cache_dir).resolve()),
            sites=tuple(replace(s, path=str(Path(s.path).resolve())) for s in data.sites),
            test_set=str(Path(data.test_set).resolve()) if data.test_set else None,
        ),
        tracking=replace(config.tracking, results_dir=str(Path(config.tracking.results_dir).resolve())),
    )


def load_config(
    paths: str | Path | list[str | Path], overrides: list[str] | tuple[str, ...] = ()
) -> StudyConfig:
    """Read a YAML study file (later files are fragments deep-merged over it), apply `section.key=value`
    overrides, validate and freeze.

    Raises:
        ConfigError: missing file, bad YAML, unknown keys, wrong types or impossible values.
    """
    raw: dict = {}
    for path in paths if isinstance(paths, list) else [paths]:
        raw = deep_merge(raw, read_yaml(Path(path)))
    return config_from_data(apply_overrides(raw, overrides))


def read_yaml(path: Path) -> dict:
    """Parse one YAML mapping, with errors that name the file."""
    if not path.is_file():
        raise ConfigError(f"Config file '{path}' does not exist.")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"Config file '{path}' is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"Config file '{path}' must hold a mapping of sections, not {type(data).__name__}.")
    return data


def deep_merge(base: dict, update: dict) -> dict:
    """A copy of `base` with `update` merged in: mappings recursively, other values replaced.

    A section that names a different component (another `name`, e.g. another method) replaces the
    base section whole, so the old component's parameters do not leak into the new one.
    """
    merged = dict(base)
    for key, value in update.items():
        renamed = isinstance(value, dict) and "name" in value and value["name"] != (merged.get(key) or {}).get("name")
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and not renamed:
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def config_from_data(raw: dict) -> StudyConfig:
    """Validate plain data (e.g. a parsed YAML file) into a StudyConfig, method params included."""
    config = build(StudyConfig, raw)
    method = method_spec(config.method.name)
    params = build(method.params, config.method.params, "method.params")
    if method.required_output is not None and config.model.output != method.required_output:
        raise ConfigError(
            f"method '{config.method.name}' needs model.output: {method.required_output}, but the model "
            f"has output: {config.model.output}. Set model.output={method.required_output} "
            f"(or use one of the configs/methods/ fragments)."
        )
    return replace(config, method=replace(config.method, params=params))


def extension_problem(config: StudyConfig, trained_rounds: int) -> str:
    """'' if a study started with a cap of `trained_rounds` rounds can train on to `config.rounds`
    by resuming its checkpoint, giving what a study started with the higher cap would; else why not."""
    if config.rounds < trained_rounds:
        return f"rounds {config.rounds} is below the {trained_rounds} it was started with"
    if config.train.lr_schedule != "constant":
        # poly decays over the cap: a higher cap changes the learning rate of every round already trained
        return f"train.lr_schedule is {config.train.lr_schedule}, whose every round depends on the rounds cap"
    return ""


def load_run_config(run_dir: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> StudyConfig:
    """A run folder's resolved config, relocated to where the folder is now (it may have been moved).

    Raises:
        ConfigError: the folder holds no config.resolved.yaml.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.resolved.yaml").is_file():
        raise ConfigError(f"'{run_dir}' is not a fedray run folder (no config.resolved.yaml).")
    here = [f"tracking.results_dir={run_dir.resolve().parent}", f"tracking.run_name={run_dir.name}"]
    return load_config(run_dir / "config.resolved.yaml", [*here, *overrides])


def apply_overrides(raw: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """Return a copy of `raw` with each `a.b.c=value` applied; values are parsed as YAML.

    A key may index a list: `data.sites[2].labels.1=liver`, `federation.hospitals[0].cases=6`,
    `data.patch_size[0]=48` (the item must exist).
    """
    raw = to_data(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"Override '{item}' must look like section.key=value.")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        steps = _override_steps(item, key)
        node = raw
        for step, following in zip(steps, steps[1:]):
            node = _child(node, step, following, item)
        last = steps[-1]
        if isinstance(last, int):
            if not isinstance(node, list) or not -len(node) <= last < len(node):
                raise ConfigError(f"Override '{item}': there is no item [{last}] to set.")
        elif not isinstance(node, dict):
            raise ConfigError(f"Override '{item}': '{last}' is not in a section.")
        else:
            last = _dict_key(node, last)
        node[last] = value
    return raw


def _override_steps(item: str, key: str) -> list[str | int]:
    """'data.sites[2].labels.1' -> ['data', 'sites', 2, 'labels', '1']."""
    import re

    steps: list[str | int] = []
    for part in key.split("."):
        match = re.fullmatch(r"([^\[\]]+)((?:\[-?\d+\])*)", part)
        if match is None:
            raise ConfigError(f"Override '{item}': '{part}' is not a key or key[index].")
        steps.append(match.group(1))
        steps += [int(i) for i in re.findall(r"\[(-?\d+)\]", match.group(2))]
    return steps


def _dict_key(node: dict, step: str) -> str | int:
    """A digit key names an integer key where the mapping has integer keys (a site's label values)."""
    if step.isdigit() and any(isinstance(k, int) for k in node):
        return int(step)
    return step


def _child(node, step: str | int, following: str | int, item: str):
    if isinstance(step, int):
        if not isinstance(node, list) or not -len(node) <= step < len(node):
            raise ConfigError(f"Override '{item}': there is no item [{step}] (the list has "
                              f"{len(node) if isinstance(node, list) else 0}).")
        return node[step]
    if not isinstance(node, dict):
        raise ConfigError(f"Override '{item}': '{step}' is not in a section.")
    child = node.setdefault(_dict_key(node, step), [] if isinstance(following, int) else {})
    if not isinstance(child, (dict, list)):
        raise ConfigError(f"Override '{item}': '{step}' is not a section.")
    return child


def save_config(config: StudyConfig, path: Path) -> None:
    """Write the resolved config (every default filled in) as YAML."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_data(config), sort_keys=False))


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists stay values (for MLflow params)."""
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): data}


# Keys that name a run or place it, but do not change what it computes (results are bit-identical
# across actor counts); everything else, seed aside, decides which runs are seeds of one configuration.
# The plateau rule only judges the curve afterwards, so it is left out too (runs keep their digest);
# with eval.stop_at_plateau it also ends training, which the digest keeps through that key.
PLATEAU_RULE_KEYS = ("eval.plateau_window", "eval.plateau_tolerance", "eval.plateau_min_rounds")
NOT_IN_DIGEST = ("name", "seed", *PLATEAU_RULE_KEYS)
NOT_IN_DIGEST_SECTIONS = ("tracking.", "resources.")


def config_digest(flat: dict[str, Any]) -> str:
    """A short digest of a flattened config (`flatten(to_data(config))`, or a run's MLflow params)
    without the seed and the keys that only name or place the run: runs with the same digest are
    seeds of one configuration (what `fedray report` groups)."""
    kept = {k: str(v) for k, v in flat.items() if k not in NOT_IN_DIGEST and not k.startswith(NOT_IN_DIGEST_SECTIONS)}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:12]
