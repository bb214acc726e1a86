"""FedAvg (McMahan et al., 2017): the weighted mean of the hospitals' weights."""

from __future__ import annotations

from fedray.strategies.base import Strategy


class FedAvg(Strategy):
    """FedAvg. With a softmax model, organs a hospital does not label are trained as background."""

    def client_weight(self, num_examples: int) -> float:
        """Training cases when weighted, else 1."""
        return float(num_examples) if self.params.weighted else 1.0
