"""Federated methods: a registry of strategies by name, with did-you-mean errors."""

from __future__ import annotations

from fedray.config import MethodConfig
from fedray.errors import ConfigError, did_you_mean
from fedray.strategies.base import Strategy
from fedray.strategies.condist import ConDist
from fedray.strategies.fedavg import FedAvg
from fedray.strategies.fedkd import FedKD
from fedray.strategies.fedprox import FedProx
from fedray.strategies.local import LocalOnly
from fedray.strategies.marginal import Marginal

STRATEGIES: dict[str, type[Strategy]] = {
    "fedavg": FedAvg,
    "fedprox": FedProx,
    "marginal": Marginal,
    "condist": ConDist,
    "fedkd": FedKD,
    "local": LocalOnly,
}


def get_strategy_class(name: str) -> type[Strategy]:
    """The strategy registered as `name`.

    Raises:
        ConfigError: unknown name, with the closest match and the full list.
    """
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ConfigError(
            f"Unknown method.name '{name}'.{did_you_mean(name, STRATEGIES)} "
            f"Available: {', '.join(sorted(STRATEGIES))}."
        ) from None


def build_strategy(method: MethodConfig) -> Strategy:
    """Instantiate the configured strategy with its validated params and server optimiser."""
    return get_strategy_class(method.name)(method.params, method.server)
