"""Federated methods: a registry of strategies by name, with did-you-mean errors."""

from __future__ import annotations

from fedray.errors import ConfigError, did_you_mean
from fedray.strategies.base import Strategy
from fedray.strategies.fedavg import FedAvg

STRATEGIES: dict[str, type[Strategy]] = {
    "fedavg": FedAvg,
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


def build_strategy(name: str, params: object) -> Strategy:
    """Instantiate the strategy `name` with validated params."""
    return get_strategy_class(name)(params)
