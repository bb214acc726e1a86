"""FedOpt server optimisers: the averaged update as a pseudo-gradient, stepped by a torch optimiser."""

from __future__ import annotations

import numpy as np
import torch

from fedray.config import ServerOptimizerConfig
from fedray.messages import State


class AdaptiveServerOptimizer(torch.optim.Optimizer):
    """FedAdam and FedYogi exactly as Reddi et al. (2021), Algorithm 2.

    m = b1 m + (1 - b1) g;  Adam: v = b2 v + (1 - b2) g^2;  Yogi: v = v - (1 - b2) g^2 sign(v - g^2);
    x -= lr m / (sqrt(v) + tau), with m starting at 0 and v at tau^2 and no bias correction
    (torch's Adam has both a zero start and bias correction, so it is not used).
    """

    def __init__(self, params, rule: str, lr: float, betas: tuple[float, float], eps: float) -> None:
        if rule not in ("adam", "yogi"):
            raise ValueError(f"unknown adaptive server rule {rule!r}")
        super().__init__(params, {"rule": rule, "lr": lr, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None) -> None:  # noqa: D102 - torch's Optimizer.step contract
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            tau = group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.full_like(p, tau * tau)
                m, v, g2 = state["m"], state["v"], p.grad * p.grad
                m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                if group["rule"] == "adam":
                    v.mul_(beta2).add_(g2, alpha=1 - beta2)
                else:
                    v.sub_((1 - beta2) * g2 * torch.sign(v - g2))
                p.sub_(group["lr"] * m / (v.sqrt() + tau))


class ServerOptimizer:
    """new_global = optimiser step on global with gradient (global - mean of hospital weights).

    Non-float entries (counters) take the mean. Optimiser state lives here, on the driver, across rounds.
    FedAdam and FedYogi follow Reddi et al.'s Algorithm 2 (v starts at tau^2 = eps^2, no bias
    correction).
    """

    def __init__(self, cfg: ServerOptimizerConfig) -> None:
        self.cfg = cfg
        self.params: dict[str, torch.Tensor] | None = None
        self.optimizer: torch.optim.Optimizer | None = None

    def step(self, global_state: State, mean_state: State) -> State:
        """One server step; 'none' returns the mean unchanged."""
        if self.cfg.name == "none":
            return mean_state
        if self.params is None:
            self.params = {
                k: torch.zeros(v.shape, dtype=torch.float64)
                for k, v in global_state.items()
                if np.issubdtype(v.dtype, np.floating)
            }
            self.optimizer = self._make(list(self.params.values()))
        new_state = dict(mean_state)
        for key, param in self.params.items():
            current = torch.from_numpy(np.asarray(global_state[key], dtype=np.float64))
            param.copy_(current)
            param.grad = current - torch.from_numpy(np.asarray(mean_state[key], dtype=np.float64))
        self.optimizer.step()
        for key, param in self.params.items():
            new_state[key] = param.detach().numpy().astype(global_state[key].dtype)
        return new_state

    def state_dict(self) -> dict:
        """Optimiser state for checkpoints (empty before the first step or for 'none')."""
        if self.optimizer is None:
            return {}
        return {"params": dict(self.params), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore what state_dict() returned."""
        if not state:
            return
        self.params = {k: v.clone() for k, v in state["params"].items()}
        self.optimizer = self._make(list(self.params.values()))
        self.optimizer.load_state_dict(state["optimizer"])

    def _make(self, params: list[torch.Tensor]) -> torch.optim.Optimizer:
        cfg = self.cfg
        if cfg.name == "sgd":
            return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum)
        return AdaptiveServerOptimizer(params, cfg.name, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
