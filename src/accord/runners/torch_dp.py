"""DP-SGD for the torch runner through Opacus (the optional extra ``accord[opacus]``): the
plan's ``task_runner.settings.dp_sgd`` makes each training task clip every example's gradient
to ``max_grad_norm`` and add Gaussian noise to each batch's sum, over Poisson-sampled batches
(Opacus's PrivacyEngine around the site's model, optimizer and a loader of its training set).

The guarantee is record-level, at this site: (epsilon, delta) for one example of this site's
data, against anyone who sees what the site sends (every round's update). The site reports its
own epsilon after each training task (``dp_sgd_epsilon`` in the train metrics), by Opacus's RDP
accountant over every DP-SGD step this site ran: each task's steps are recorded in the site's
own state folder (dp/ledger.py) before its reply leaves, so a restarted site goes on from them,
and a round asked twice counts twice. With ``target_epsilon`` the budget is enforced: a task
that would take epsilon past it is refused (BudgetSpent, reported to the aggregator).

The noise and the sampling draw from a generator of their own: seeded from OS entropy unless
the plan sets ``noise_seed``, which is refused unless ``seed_for_tests_only`` is set too (the
plan is shared, so a planned seed lets others remove the noise: tests only).
"""

from __future__ import annotations

import math
import secrets
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from accord.data.base import DataLoader
from accord.dp.ledger import BudgetSpent, Ledger
from accord.dp.seeds import check_seed
from accord.errors import AccordError
from accord.imports import optional_module

WHERE = "task_runner.settings.dp_sgd"
#: what a training task trains: the model, its optimizer, and an epoch's batches (given its seed)
Training = tuple[nn.Module, torch.optim.Optimizer, Callable[[int], Iterator[tuple[np.ndarray, np.ndarray]]]]
INSTALL = "install the DP-SGD extra: pip install 'accord[opacus]' (opacus 1.6)"


def _opacus() -> Any:
    return optional_module("opacus", "task_runner.settings.dp_sgd", INSTALL)


@dataclass(frozen=True)
class DPSGD:
    """The plan's ``dp_sgd``: ``max_grad_norm`` and either ``noise_multiplier`` or a budget,
    ``target_epsilon`` over ``rounds`` training tasks of ``epochs`` epochs each."""

    max_grad_norm: float
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    rounds: int | None = None
    delta: float = 1e-5
    noise_seed: int | None = None
    seed_for_tests_only: bool = False

    @classmethod
    def from_plan(cls, settings: Mapping[str, Any]) -> DPSGD:
        """Checked settings; one clear line naming the key otherwise."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(settings) - known)
        if unknown:
            raise AccordError(f"{WHERE} has unknown keys {unknown}", f"use some of {sorted(known)}")
        if "max_grad_norm" not in settings:
            raise AccordError(
                f"{WHERE} needs max_grad_norm", f"set {WHERE}.max_grad_norm (the L2 norm each example's gradient is clipped to)"
            )
        for key, value in settings.items():
            if key == "seed_for_tests_only":
                ok = isinstance(value, bool)
            elif key in ("rounds", "noise_seed"):
                ok = value is None or (
                    isinstance(value, int) and not isinstance(value, bool) and (key == "noise_seed" or value >= 1)
                )
            else:
                ok = value is None or (
                    isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
                )
            if not ok or (key == "delta" and not 0 < value < 1):
                raise AccordError(
                    f"{WHERE}.{key} is {value!r}",
                    f"set {WHERE}.{key} to a positive {'integer' if key in ('rounds',) else 'number'}",
                )
        chosen = cls(**settings)
        if (chosen.noise_multiplier is None) == (chosen.target_epsilon is None):
            raise AccordError(
                f"{WHERE} needs exactly one of noise_multiplier and target_epsilon",
                f"set {WHERE}.noise_multiplier, or target_epsilon with rounds",
            )
        if chosen.target_epsilon is not None and chosen.rounds is None:
            raise AccordError(
                f"{WHERE}.target_epsilon needs rounds", f"set {WHERE}.rounds: the training tasks the budget is spread over"
            )
        check_seed("DP-SGD", WHERE, chosen.noise_seed, chosen.seed_for_tests_only, "noise_seed")
        return chosen


def check_model(model: nn.Module) -> None:
    """Opacus's ModuleValidator's objections to ``model`` (BatchNorm, ...) as one clear line."""
    validators = _opacus().validators
    was_training = model.training
    model.train()
    try:
        errors = validators.ModuleValidator.validate(model, strict=False)
    finally:
        model.train(was_training)
    if errors:
        said = "; ".join(dict.fromkeys(str(e).strip().replace("\n", " ") for e in errors))
        raise AccordError(
            f"the model cannot train with DP-SGD (Opacus): {said}",
            "replace the modules named (BatchNorm by GroupNorm or LayerNorm: opacus.validators.ModuleValidator.fix) "
            f"in task_runner.settings.model, or remove {WHERE}",
        )


class PrivateTraining:
    """One site's DP-SGD: wraps the model and optimizer for a task, and keeps the accountant."""

    def __init__(self, settings: DPSGD, model: nn.Module) -> None:
        self.settings = settings
        check_model(model)
        seed = secrets.randbits(63) if settings.noise_seed is None else settings.noise_seed
        self.generator = torch.Generator().manual_seed(seed)
        self.accountant = _opacus().accountants.RDPAccountant()
        self._noise: float | None = settings.noise_multiplier
        self.ledger = Ledger()

    def keep_state_in(self, folder: Path) -> None:
        """Account every DP-SGD step this site ran, restarts included: its ledger in ``folder``."""
        self.ledger = Ledger(folder / "dp_sgd.json")
        self.accountant.history = [(float(z), float(q), int(steps)) for z, q, steps in self.ledger.rows]

    def noise_multiplier(self, sample_rate: float, steps_per_task: int) -> float:
        """The planned z, or the one whose ``rounds`` tasks spend ``target_epsilon`` (Opacus's calibration)."""
        if self._noise is None:
            s = self.settings
            assert s.target_epsilon is not None and s.rounds is not None
            get_noise = _opacus().accountants.utils.get_noise_multiplier
            self._noise = float(
                get_noise(
                    target_epsilon=s.target_epsilon,
                    target_delta=s.delta,
                    sample_rate=sample_rate,
                    steps=s.rounds * steps_per_task,
                    accountant="rdp",
                )
            )
        return self._noise

    @contextmanager
    def task(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, data: DataLoader, epochs: int, seed: int
    ) -> Iterator[Training]:
        """The private model, optimizer and an epoch's Poisson-sampled batches for one training task."""
        opacus = _opacus()
        x, y = _training_set(data, seed)
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(x, y), batch_size=max(1, int(getattr(data, "batch_size", 1)))
        )
        sampled = opacus.data_loader.DPDataLoader.from_data_loader(loader, generator=self.generator)
        sample_rate = 1 / len(sampled)
        noise = self.noise_multiplier(sample_rate, epochs * len(sampled))
        self._refuse_past_budget(noise, sample_rate, epochs * len(sampled))
        with warnings.catch_warnings():  # "Secure RNG turned off": the noise has its own generator
            warnings.simplefilter("ignore", UserWarning)
            engine = opacus.PrivacyEngine(accountant="rdp")
        engine.accountant = self.accountant  # one accountant over every task of this site
        private, dp_optimizer, _ = engine.make_private(
            module=model,
            optimizer=optimizer,
            data_loader=sampled,
            noise_multiplier=noise,
            max_grad_norm=self.settings.max_grad_norm,
            poisson_sampling=False,  # the loader is Poisson-sampled already, with our generator
            noise_generator=self.generator,
        )

        def batches(_seed: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
            return ((bx.numpy(), by.numpy()) for bx, by in sampled)

        before = self.steps()
        try:
            with warnings.catch_warnings():  # torch: the backward hooks fire on a model whose inputs need no gradient
                warnings.filterwarnings("ignore", "Full backward hook is firing", UserWarning)
                yield private, dp_optimizer, batches
            self.ledger.add([noise, sample_rate, self.steps() - before])  # before the reply leaves
        finally:
            private.to_standard_module()  # the hooks and per-example gradients removed

    def steps(self) -> int:
        """The DP-SGD steps the accountant holds (this site's, restarts included)."""
        return sum(int(steps) for _, _, steps in self.accountant.history)

    def _refuse_past_budget(self, noise: float, sample_rate: float, steps: int) -> None:
        """BudgetSpent if a task of ``steps`` steps would take epsilon past ``target_epsilon``."""
        target = self.settings.target_epsilon
        if target is None or not self.accountant.history:
            return
        after = _opacus().accountants.RDPAccountant()
        after.history = [*self.accountant.history, (noise, sample_rate, steps)]
        epsilon = float(after.get_epsilon(self.settings.delta))
        if epsilon > target:
            raise BudgetSpent(
                f"DP-SGD's privacy budget is spent: the next training task would take this site's epsilon from "
                f"{self.epsilon():.4f} to {epsilon:.4f}, past {WHERE}.target_epsilon {target:g}",
                f"start a new federation with a new budget (this site's steps are in its state folder), or raise "
                f"{WHERE}.target_epsilon and rounds",
            )

    def epsilon(self) -> float:
        """This site's epsilon at ``delta`` over every DP-SGD step run so far (restarts included)."""
        return float(self.accountant.get_epsilon(self.settings.delta))


def _training_set(data: DataLoader, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The site's whole training set, from one pass of its batches."""
    xs, ys = zip(*data.train_batches(seed=seed), strict=True)
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))
