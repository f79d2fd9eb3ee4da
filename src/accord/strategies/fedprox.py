"""FedProx (Li et al. 2020): FedAvg's aggregation, and a proximal term at the sites.

Each site adds ``proximal_mu / 2 * ||w - w_global||^2`` to its loss at every local step,
``w_global`` being the round's global model (the weights loaded when the task starts), so a
site's model is held near the global one on non-IID data. The strategy sends ``proximal_mu``
in the per-round config; the torch and Keras runners apply it (docs/runners.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from accord.messages import ConfigValue
from accord.runners._shared import check_proximal_mu
from accord.strategies.base import Strategy


class FedProx(Strategy):
    """FedAvg's sample-weighted bounded mean; sends ``proximal_mu`` (>= 0) to the training tasks."""

    config_schema: ClassVar[Mapping[str, type]] = {"proximal_mu": float}

    def __init__(self, proximal_mu: float = 0.01) -> None:
        self.proximal_mu = check_proximal_mu(proximal_mu)  # the check each site makes of what it receives

    def configure(self, round_number: int) -> dict[str, ConfigValue]:
        return {"proximal_mu": self.proximal_mu}
