"""Federated methods: build the strategy a config names (the registry itself is fedray.methods)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from fedray.methods import method_spec

if TYPE_CHECKING:
    from fedray.config import MethodConfig
    from fedray.strategies.base import Strategy


def get_strategy_class(name: str) -> type[Strategy]:
    """The strategy class registered as `name` (imports its module, and with it torch)."""
    module, _, cls = method_spec(name).implementation.partition(":")
    return getattr(importlib.import_module(module), cls)


def build_strategy(method: MethodConfig) -> Strategy:
    """Instantiate the configured strategy with its validated params and server optimiser."""
    return get_strategy_class(method.name)(method.params, method.server)
