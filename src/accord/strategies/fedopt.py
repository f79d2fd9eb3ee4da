"""The server optimizers' shared part: a step on the round's pseudo-gradient, moments as state.

FedAvgM (fedavgm.py) and the FedOpt family (Reddi et al. 2021, "Adaptive Federated
Optimization": fedadam.py, fedyogi.py, fedadagrad.py) average the cohort's replies as FedAvg
does (the default accumulator, BoundedMean: bounded, sample-weighted), then treat the change
``mean - global`` as a gradient step and let a server optimizer choose the actual step.

Only floating-point model tensors step; optimizer state (``__opt__.*``) and non-float tensors
(counters, masks) take the aggregate as it is. Each moment is one array per stepped tensor,
kept in the model's precision (at least float32) and computed in float64: memory is one model
per moment, and the moments are the strategy's state (``snapshot``/``restore``), journaled so
a restart resumes the optimizer exactly.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from accord.aggregation.fedavg import robust_tensor
from accord.errors import AccordError
from accord.strategies.base import Strategy
from accord.strategies.seam import Aggregate, RoundContext, StrategyState
from accord.tensors.state import ModelState


def stepped(name: str, reference: np.ndarray) -> bool:
    """Whether a server optimizer steps tensor ``name``: floating-point, not optimizer state."""
    return not robust_tensor(name, reference)


class ServerOptimizer(Strategy):
    """A strategy whose ``finish`` steps a server optimizer; subclasses name their ``moments``
    and write ``step`` (the update rule of their paper)."""

    #: the per-tensor buffers the optimizer keeps, saved as ``<moment>.<tensor name>``
    moments: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        self._buffers: dict[str, dict[str, np.ndarray]] = {moment: {} for moment in self.moments}
        #: rounds stepped so far
        self.rounds = 0

    def initial(self, moment: str, reference: np.ndarray) -> np.ndarray:
        """A moment's value before the first round (zeros; float64)."""
        return np.zeros(reference.shape, np.float64)

    def step(self, change: np.ndarray, buffers: dict[str, np.ndarray]) -> np.ndarray:
        """The change to add to the global tensor, from ``change`` (mean - global) and the
        tensor's moments (float64, updated in place or replaced in ``buffers``)."""
        raise NotImplementedError

    def finish(self, context: RoundContext, aggregate: Aggregate) -> ModelState:
        """The global model plus the optimizer's step, tensor by tensor."""
        model = dict(aggregate.model)
        for name, reference in context.global_model.items():
            if not stepped(name, reference):
                continue
            kept = np.promote_types(reference.dtype, np.float32)
            saved = {m: self._buffers[m].get(name) for m in self.moments}
            buffers = {m: self.initial(m, reference) if b is None else b.astype(np.float64) for m, b in saved.items()}
            start = reference.astype(np.float64)
            change = self.step(np.asarray(aggregate.model[name], np.float64) - start, buffers)
            for moment in self.moments:
                self._buffers[moment][name] = buffers[moment].astype(kept)
            model[name] = (start + change).astype(reference.dtype)
        self.rounds += 1
        return model

    def snapshot(self) -> StrategyState:
        """The rounds stepped and every moment (copies), as ``<moment>.<tensor name>``."""
        tensors = {f"{moment}.{name}": array.copy() for moment, arrays in self._buffers.items() for name, array in arrays.items()}
        return StrategyState(values={"rounds": self.rounds}, tensors=tensors)

    def restore(self, state: StrategyState) -> None:
        """Take back a ``snapshot`` (a fresh instance then continues exactly as the saved one)."""
        buffers: dict[str, dict[str, np.ndarray]] = {moment: {} for moment in self.moments}
        for key, array in state.tensors.items():
            moment, _, name = key.partition(".")
            if moment not in buffers or not name:
                raise AccordError(
                    f"saved state of strategy {type(self).__name__} has tensor {key!r}; expected {'/'.join(self.moments)}.<tensor>",
                    "the saved round was written by another strategy: restore it with that one, or start the federation afresh",
                )
            buffers[moment][name] = np.array(array)
        self._buffers = buffers
        self.rounds = int(state.values.get("rounds", 0))


class AdaptiveOptimizer(ServerOptimizer):
    """Reddi et al.'s Algorithm 2: with ``Δ`` the change (mean - global),
    ``m = β1 m + (1 - β1) Δ``, ``v`` by the subclass's ``second_moment``, and the step
    ``η m / (√v + τ)``; ``m`` starts at 0 and ``v`` at ``τ²`` (the paper's ``v₋₁ ≥ τ²``)."""

    moments = ("m", "v")

    def __init__(self, eta: float = 1e-2, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3) -> None:
        if not (eta > 0 and 0 <= beta1 < 1 and 0 <= beta2 < 1 and tau > 0):
            raise AccordError(
                f"{type(self).__name__}(eta={eta}, beta1={beta1}, beta2={beta2}, tau={tau}): expected eta > 0, "
                "0 <= beta1 < 1, 0 <= beta2 < 1 and tau > 0",
                "fix aggregator.settings.strategy.settings",
            )
        super().__init__()
        self.eta, self.beta1, self.beta2, self.tau = eta, beta1, beta2, tau

    def initial(self, moment: str, reference: np.ndarray) -> np.ndarray:
        return np.full(reference.shape, self.tau**2 if moment == "v" else 0.0, np.float64)

    def second_moment(self, v: np.ndarray, squared: np.ndarray) -> np.ndarray:
        """The new ``v`` from the previous one and ``Δ²`` (the update rule that names the method)."""
        raise NotImplementedError

    def step(self, change: np.ndarray, buffers: dict[str, np.ndarray]) -> np.ndarray:
        m = buffers["m"] = self.beta1 * buffers["m"] + (1 - self.beta1) * change
        v = buffers["v"] = self.second_moment(buffers["v"], change * change)
        return self.eta * m / (np.sqrt(v) + self.tau)
