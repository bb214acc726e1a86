"""One round's bookkeeping on the driver: validate each update, fold it in, count bytes and losses."""

from __future__ import annotations

import logging

import numpy as np

from fedray.messages import ClientResult, State, decode_state
from fedray.strategies.aggregate import WeightedSum
from fedray.strategies.base import Strategy

log = logging.getLogger(__name__)


def update_problem(update: State, reference: State) -> str | None:
    """Why `update` cannot be aggregated into a model shaped like `reference`, or None if it can."""
    if update.keys() != reference.keys():
        missing, extra = reference.keys() - update.keys(), update.keys() - reference.keys()
        return f"wrong keys (missing {sorted(missing)[:3]}, unexpected {sorted(extra)[:3]})"
    for key, value in update.items():
        if value.shape != reference[key].shape:
            return f"'{key}' has shape {value.shape}, expected {reference[key].shape}"
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            return f"'{key}' holds NaN or inf"
    return None


class RoundLedger:
    """Folds hospital results into the strategy's aggregate as they arrive; rejects bad updates.

    A rejected update (NaN/inf, wrong keys or shapes) is not aggregated, so one bad hospital cannot
    poison the global model; its bytes are still counted, because they were sent.
    """

    def __init__(self, strategy: Strategy, global_state: State) -> None:
        self.strategy = strategy
        self.global_state = global_state
        self.aggregate: WeightedSum = strategy.new_aggregate()
        self.bytes_down = 0
        self.bytes_up = 0
        self.losses: list[float] = []
        self.cases: list[int] = []
        self.rejected: list[str] = []

    def add(self, result: ClientResult) -> None:
        """Account for one hospital's result and aggregate its update if it is valid."""
        self.bytes_down += result.bytes_down
        self.bytes_up += result.bytes_up
        update = decode_state(result.payload)
        problem = update_problem(update, self.global_state)
        if problem is not None:
            log.warning("rejected the update of %s in round %d: %s", result.hospital_id, result.round, problem)
            self.rejected.append(result.hospital_id)
            return
        self.aggregate.add(update, self.strategy.client_weight(result.num_examples))
        self.losses.append(result.train_loss)
        self.cases.append(result.num_examples)

    @property
    def train_loss(self) -> float:
        """Mean local loss of the accepted updates, weighted by training cases."""
        return float(np.average(self.losses, weights=self.cases)) if self.losses else float("nan")

    def new_global_state(self) -> State:
        """The strategy's server update; the global model stays as it was if nothing was accepted."""
        if self.aggregate.count == 0:
            return self.global_state
        return self.strategy.server_update(self.global_state, self.aggregate)
