"""The server optimizers' shared part: a step on the round's pseudo-gradient, moments as state.

FedAvgM (fedavgm.py) and the FedOpt family (Reddi et al. 2021, "Adaptive Federated
Optimization": fedadam.py, fedyogi.py, fedadagrad.py) average the cohort's replies as FedAvg
does (the default accumulator, BoundedMean: bounded, sample-weighted), then treat the change
``mean - global`` as a gradient step and let a server optimizer choose the actual step.

Only floating-point model tensors step; optimizer state (``__opt__.*``) and non-float tensors
(counters, masks) take the aggregate as it is. Each moment is one array per stepped tensor,
kept in the model's precision (at least float32) and computed in float64: one model per
moment, in the round's ``TensorSpace`` (memory, or files mapped from disk), written anew each
round; the moments are the strategy's state (``snapshot``/``restore``), journaled so a
restart resumes the optimizer exactly.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import numpy as np

from accord.aggregation.bounds import BLOCK, blocks, flat
from accord.aggregation.fedavg import robust_tensor
from accord.errors import AccordError
from accord.strategies.base import Strategy
from accord.strategies.seam import Aggregate, RoundContext, StrategyState
from accord.tensors.state import ModelState, tensor_specs

#: elements stepped at a time: the float64 temporaries of one block (a dozen) stay ~6 MB
STEP_BLOCK = BLOCK // 16


def _kept(reference: np.ndarray) -> np.dtype:
    """The precision a tensor's moments are kept in: the tensor's, at least float32."""
    return np.promote_types(reference.dtype, np.float32)


def stepped(name: str, reference: np.ndarray) -> bool:
    """Whether a server optimizer steps tensor ``name``: floating-point, not optimizer state."""
    return not robust_tensor(name, reference)


class ServerOptimizer(Strategy, abc.ABC):
    """A strategy whose ``finish`` steps a server optimizer; subclasses name their ``moments``
    and write ``step`` (the update rule of their paper)."""

    #: the per-tensor buffers the optimizer keeps, saved as ``<moment>.<tensor name>``
    moments: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        self._buffers: dict[str, dict[str, np.ndarray]] = {moment: {} for moment in self.moments}
        #: rounds stepped so far
        self.rounds = 0

    def initial(self, moment: str) -> float:
        """A moment's value before the first round."""
        return 0.0

    @abc.abstractmethod
    def step(self, change: np.ndarray, buffers: dict[str, np.ndarray]) -> np.ndarray:
        """The change to add to the global tensor, from ``change`` (mean - global) and the
        tensor's moments (float64 blocks, updated in place or replaced in ``buffers``)."""

    def finish(self, context: RoundContext, aggregate: Aggregate) -> ModelState:
        """The global model plus the optimizer's step, one block of one tensor at a time (so
        the float64 temporaries stay a few MB whatever the model's size). The next model and
        the new moments are written into models that ``context.space`` makes (memory, or files
        mapped from disk), never in place: the moments a snapshot holds stay as they were."""
        global_model = context.global_model
        names = [name for name, reference in global_model.items() if stepped(name, reference)]
        previous = {m: {name: self._moment(m, name, global_model[name]) for name in names} for m in self.moments}
        moments = context.space.new_model(
            {f"{m}.{name}": (_kept(global_model[name]).name, global_model[name].shape) for m in self.moments for name in names}
        )
        new = context.space.new_model(tensor_specs(global_model))
        for name, reference in global_model.items():
            start, mean, out = flat(reference), flat(aggregate.model[name]), flat(new.tensor(name))
            if not stepped(name, reference):
                for part in blocks(start.size, STEP_BLOCK):
                    out[part] = mean[part]
                continue
            written = {m: flat(moments.tensor(f"{m}.{name}")) for m in self.moments}
            for part in blocks(start.size, STEP_BLOCK):
                here = start[part].astype(np.float64)
                buffers = {m: self._block(m, previous[m][name], part) for m in self.moments}
                change = self.step(mean[part].astype(np.float64) - here, buffers)
                for moment in self.moments:
                    written[moment][part] = buffers[moment]
                out[part] = here + change
        made = moments.state()
        self._buffers = {m: {name: made[f"{m}.{name}"] for name in names} for m in self.moments}
        self.rounds += 1
        return new.state()

    def _block(self, moment: str, saved: np.ndarray | None, part: slice) -> np.ndarray:
        """float64 block ``part`` of a moment (its initial value before the first round)."""
        if saved is None:
            return np.full(part.stop - part.start, self.initial(moment))
        return flat(saved)[part].astype(np.float64)

    def _moment(self, moment: str, name: str, reference: np.ndarray) -> np.ndarray | None:
        """Tensor ``name``'s ``moment`` (None before the first round), in the tensor's precision
        (at least float32); one restored for another model is refused."""
        array = self._buffers[moment].get(name)
        kept = _kept(reference)
        if array is not None and (array.shape != reference.shape or array.dtype != kept):
            raise AccordError(
                f"strategy {type(self).__name__}'s saved {moment}.{name} is {array.dtype}{list(array.shape)}, but the model's "
                f"{name} needs {kept}{list(reference.shape)}",
                "the saved round was written for another model: start the federation afresh",
            )
        return array

    def snapshot(self) -> StrategyState:
        """The rounds stepped and every moment, as ``<moment>.<tensor name>`` (not copies:
        ``finish`` writes new moments, never into these)."""
        tensors = {f"{moment}.{name}": array for moment, arrays in self._buffers.items() for name, array in arrays.items()}
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
            buffers[moment][name] = np.asarray(array)  # read, never written: finish writes new moments
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

    def initial(self, moment: str) -> float:
        return self.tau**2 if moment == "v" else 0.0

    @abc.abstractmethod
    def second_moment(self, v: np.ndarray, squared: np.ndarray) -> np.ndarray:
        """The new ``v`` from the previous one and ``Δ²`` (the update rule that names the method)."""

    def step(self, change: np.ndarray, buffers: dict[str, np.ndarray]) -> np.ndarray:
        m = buffers["m"] = self.beta1 * buffers["m"] + (1 - self.beta1) * change
        v = buffers["v"] = self.second_moment(buffers["v"], change * change)
        return self.eta * m / (np.sqrt(v) + self.tau)
