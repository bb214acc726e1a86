"""Federated methods: a registry of strategies by name, with did-you-mean errors."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from fedray.config import MethodConfig
from fedray.errors import ConfigError, did_you_mean
from fedray.strategies.params import METHODS, MethodSpec

if TYPE_CHECKING:
    from fedray.strategies.base import Strategy


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


def get_strategy_class(name: str) -> type[Strategy]:
    """The strategy class registered as `name` (imports its module, and with it torch)."""
    module, _, cls = method_spec(name).implementation.partition(":")
    return getattr(importlib.import_module(module), cls)


def build_strategy(method: MethodConfig) -> Strategy:
    """Instantiate the configured strategy with its validated params and server optimiser."""
    return get_strategy_class(method.name)(method.params, method.server)
