"""One round's bookkeeping: validate each update, fold it in, count bytes, losses and compute."""

from __future__ import annotations

import logging

import numpy as np

from fedray.messages import ClientResult, RoundAccount, RoundPart, State, decode_state, encode_state
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

    Kept by the driver for the whole round, and by each hospital actor for the hospitals it ran
    when the method's aggregation is a weighted sum (hierarchical aggregation: the actor returns one
    partial sum, see `part`). A rejected update (NaN/inf, wrong keys or shapes) is not aggregated, so
    one bad hospital cannot poison the global model; its bytes are still counted, because they were sent.
    """

    def __init__(self, strategy: Strategy, global_state: State) -> None:
        self.strategy = strategy
        self.global_state = global_state
        self.template = strategy.update_template(global_state)  # what a valid update holds
        self.aggregate: WeightedSum = strategy.new_aggregate()
        self.account = RoundAccount()

    def add(self, result: ClientResult, update: State | None = None) -> None:
        """Account for one hospital's result and aggregate its update if it is valid and in time.

        `update`: the decoded payload when the caller already holds it (a hospital actor), so it is
        not decoded again.
        """
        account = self.account
        account.bytes_down += result.bytes_down
        account.compute_s[result.hospital_id] = result.train_seconds
        account.losses[result.hospital_id] = result.train_loss
        if result.late:
            account.late.append(result.hospital_id)  # it received the model, but sent nothing in time
            account.traffic[result.hospital_id] = (result.bytes_down, 0)
            return
        account.bytes_up += result.bytes_up
        account.traffic[result.hospital_id] = (result.bytes_down, result.bytes_up)
        if update is None:
            update = decode_state(result.payload) if result.payload else {}
        problem = update_problem(update, self.template)
        if problem is not None:
            log.warning("rejected the update of %s in round %d: %s", result.hospital_id, result.round, problem)
            account.rejected.append(result.hospital_id)
            return
        self.aggregate.add(update, self.strategy.client_weight(result.num_examples))
        account.accepted[result.hospital_id] = (result.train_loss, result.num_examples)

    def merge(self, part: RoundPart) -> None:
        """Fold in a hospital actor's share of the round: its partial sum and its accounts."""
        self.account.merge(part.account)
        if part.count:
            self.aggregate.merge(decode_state(part.aggregate), part.weight, part.count)

    def part(self, round_index: int) -> RoundPart:
        """This (actor-side) ledger as one partial aggregate for the driver."""
        total = self.aggregate.total
        return RoundPart(
            round=round_index,
            account=self.account,
            aggregate=encode_state(total) if total is not None else b"",
            weight=self.aggregate.weight,
            count=self.aggregate.count,
        )

    @property
    def rejected(self) -> list[str]:
        return self.account.rejected

    @property
    def train_loss(self) -> float:
        """Mean local loss of the accepted updates, weighted by training cases (in hospital order)."""
        if not self.account.accepted:
            return float("nan")
        losses, cases = zip(*(self.account.accepted[h] for h in sorted(self.account.accepted)))
        return float(np.average(losses, weights=cases))

    def new_global_state(self) -> State:
        """The strategy's server update; the global model stays as it was if nothing was accepted."""
        if self.aggregate.count == 0:
            return self.global_state
        return self.strategy.server_update(self.global_state, self.aggregate)
