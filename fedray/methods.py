"""The method registry: each method's parameters, model-output rule and implementation (no torch, so loading a config is quick)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fedray.configtypes import require
from fedray.errors import ConfigError, did_you_mean


@dataclass(frozen=True)
class NoParams:
    """A method without parameters."""


@dataclass(frozen=True)
class FedAvgParams:
    """FedAvg parameters.

    Attributes:
        weighted: weight each hospital by its training cases; False gives the unweighted mean that
            Kim et al.'s code uses.
    """

    weighted: bool = True


@dataclass(frozen=True)
class FedProxParams:
    """FedProx parameters.

    Attributes:
        mu: weight of the proximal term (mu / 2) * ||w - w_global||^2; 0 is exactly FedAvg.
        weighted: weight each hospital by its training cases, as in FedAvg.
    """

    mu: float = 0.01
    weighted: bool = True

    def __post_init__(self) -> None:
        require(self.mu >= 0, f"method.params.mu must be >= 0, got {self.mu}.")


@dataclass(frozen=True)
class MarginalParams:
    """Marginal-loss parameters.

    Attributes:
        exclusion: add the exclusion Dice loss (organs may not overlap a labelled organ).
        exclusion_weight: weight of the exclusion term (Shi et al.'s code uses 2).
        weighted: weight each hospital by its training cases, as in FedAvg.
    """

    exclusion: bool = False
    exclusion_weight: float = 1.0
    weighted: bool = True

    def __post_init__(self) -> None:
        require(self.exclusion_weight >= 0, "method.params.exclusion_weight must be >= 0.")


@dataclass(frozen=True)
class ConDistParams:
    """ConDistFL parameters; defaults follow the NVFlare code (methods.md §1.4, §1.6).

    Attributes:
        temperature: T softening teacher and student before conditioning (2).
        weight_range: ConDist weight at the first and at the last ramp round (0.01, 1.0); equal
            values give a constant weight.
        ramp_rounds: rounds R of the linear ramp (120, the reference's round count); the weight
            stays at weight_range[1] afterwards. Set it to the study's rounds to ramp over them.
        weighted: weight hospitals by training cases; the reference gives every client weight 1.
        grad_clip_norm: clip the gradient's global L2 norm to this before each step (reference:
            1.0); 0 turns clipping off.
        keep_optimizer_state: each hospital keeps its local optimiser's state (momentum buffers)
            from round to round, as the reference's clients do; False starts every round empty.
    """

    temperature: float = 2.0
    weight_range: tuple[float, float] = (0.01, 1.0)
    ramp_rounds: int = 120
    weighted: bool = False
    grad_clip_norm: float = 1.0
    keep_optimizer_state: bool = True

    def __post_init__(self) -> None:
        require(self.temperature > 0, "method.params.temperature must be > 0.")
        require(min(self.weight_range) >= 0, "method.params.weight_range values must be >= 0.")
        require(self.ramp_rounds >= 2, "method.params.ramp_rounds must be >= 2.")
        require(self.grad_clip_norm >= 0, "method.params.grad_clip_norm must be >= 0.")

    def weight(self, round_index: int) -> float:
        """lambda_r = w0 + r (w1 - w0) / (R - 1), r = round_index - 1 (rounds count from 1)."""
        start, end = self.weight_range
        progress = min(max(round_index - 1, 0) / (self.ramp_rounds - 1), 1.0)
        return start + (end - start) * progress


@dataclass(frozen=True)
class FedKDParams:
    """FedKD parameters; defaults follow the authors' code (paper.md §3).

    Attributes:
        global_kd_weight: weight of distillation from the frozen round-start global model (alpha = 1).
            0 gives the teacher-KD-only ablation.
        teacher_kd_weight: weight of distillation from the organ-specific teachers. 0 gives the
            global-KD-only ablation (and skips teacher pre-training).
        teachers_per_step: unlabelled organs whose teacher is sampled at each step (n_sample = 1).
        temperature: soft targets are sigmoid(teacher_logit / T). The code multiplies by T; at the
            default T = 1 both are the same (open point 6).
        global_kd_on_own_organs: also distil the global model on the hospital's own organs. The
            authors' full-method client does this, perhaps by accident (open point 4); off by default.
        bce_weight: weight of BCE in the supervised Dice + BCE loss (1 for the KD clients in the code).
        teacher_steps: local steps of each teacher's pre-training on its own site.
    """

    global_kd_weight: float = 1.0
    teacher_kd_weight: float = 1.0
    teachers_per_step: int = 1
    temperature: float = 1.0
    global_kd_on_own_organs: bool = False
    bce_weight: float = 1.0
    teacher_steps: int = 200

    def __post_init__(self) -> None:
        require(self.global_kd_weight >= 0 and self.teacher_kd_weight >= 0, "KD weights must be >= 0.")
        require(self.teachers_per_step >= 1, "teachers_per_step must be >= 1.")
        require(self.temperature > 0, "temperature must be > 0.")
        require(self.teacher_steps >= 1, "teacher_steps must be >= 1.")


@dataclass(frozen=True)
class ScaffoldParams:
    """SCAFFOLD parameters (Karimireddy et al., 2020).

    Attributes:
        weighted: weight hospitals by training cases; the paper averages uniformly (False).
    """

    weighted: bool = False


@dataclass(frozen=True)
class FedDynParams:
    """FedDyn parameters (Acar et al., 2021).

    Attributes:
        alpha: weight of the dynamic regulariser (alpha / 2) ||w - w_global||^2 and of the linear
            term's update; the paper sweeps 1e-3..1e-1 and uses 1e-2 most often.
    """

    alpha: float = 0.01

    def __post_init__(self) -> None:
        require(self.alpha > 0, f"method.params.alpha must be > 0, got {self.alpha}.")


@dataclass(frozen=True)
class FedBNParams:
    """FedBN parameters (Li et al., 2021).

    Attributes:
        weighted: weight each hospital by its training cases, as in FedAvg.
    """

    weighted: bool = True


@dataclass(frozen=True)
class MethodSpec:
    """A method as configs name it: its parameters, the model output it needs, and where it is implemented.

    `implementation` ("module:Class") is imported only when a study builds the method, so loading and
    checking a config does not import torch and MONAI.
    """

    params: type
    implementation: str
    required_output: Literal["softmax", "sigmoid"] | None = None


METHODS: dict[str, MethodSpec] = {
    "fedavg": MethodSpec(FedAvgParams, "fedray.strategies.fedavg:FedAvg"),
    "fedprox": MethodSpec(FedProxParams, "fedray.strategies.fedprox:FedProx"),
    "marginal": MethodSpec(MarginalParams, "fedray.strategies.marginal:Marginal", "softmax"),
    "condist": MethodSpec(ConDistParams, "fedray.strategies.condist:ConDist", "softmax"),
    "fedkd": MethodSpec(FedKDParams, "fedray.strategies.fedkd:FedKD", "sigmoid"),
    "local": MethodSpec(NoParams, "fedray.strategies.local:LocalOnly", "sigmoid"),
    "scaffold": MethodSpec(ScaffoldParams, "fedray.strategies.scaffold:Scaffold"),
    "feddyn": MethodSpec(FedDynParams, "fedray.strategies.feddyn:FedDyn"),
    "fedbn": MethodSpec(FedBNParams, "fedray.strategies.fedbn:FedBN"),
}


def method_spec(name: str) -> MethodSpec:
    """The method registered as `name`: its parameters, required model output and implementation.

    Raises:
        ConfigError: unknown name, with the closest match and the full list.
    """
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(
            f"Unknown method.name '{name}'.{did_you_mean(name, METHODS)} "
            f"Available: {', '.join(sorted(METHODS))}."
        ) from None
