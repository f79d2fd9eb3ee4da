"""FedAvgM (Hsu et al. 2019): FedAvg with server momentum."""

from __future__ import annotations

import numpy as np

from accord.errors import AccordError
from accord.strategies.fedopt import ServerOptimizer


class FedAvgM(ServerOptimizer):
    """With the pseudo-gradient ``g = global - mean``: ``m = momentum m + g`` and the next
    global is ``global - server_lr m`` (``m`` starts at 0). ``server_lr = 1, momentum = 0``
    is FedAvg. Defaults: ``server_lr = 1.0``, ``momentum = 0.9`` (a value the paper's sweeps
    use; it tunes the effective rate ``server_lr / (1 - momentum)`` per task)."""

    moments = ("m",)

    def __init__(self, server_lr: float = 1.0, momentum: float = 0.9) -> None:
        if not (server_lr > 0 and 0 <= momentum < 1):
            raise AccordError(
                f"FedAvgM(server_lr={server_lr}, momentum={momentum}): expected server_lr > 0 and 0 <= momentum < 1",
                "fix aggregator.settings.strategy.settings",
            )
        super().__init__()
        self.server_lr, self.momentum = server_lr, momentum

    def step(self, change: np.ndarray, buffers: dict[str, np.ndarray]) -> np.ndarray:
        m = buffers["m"] = self.momentum * buffers["m"] - change
        return -self.server_lr * m
