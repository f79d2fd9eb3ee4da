"""TorchTaskRunner: the TaskRunner protocol for a PyTorch model, optimizer and loss."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from accord.data.base import DataLoader
from accord.errors import AccordError
from accord.runners._shared import batches_per_epoch, check_proximal_mu, derive_seed, progress_bar, show_progress
from accord.runners._torch_parts import (
    LossFn,
    OptimizerFactory,
    ProximalTerm,
    build_optimizer,
    count_correct,
    make_loss,
    resolve_device,
    to_tensor,
)
from accord.runners.base import TaskOutput
from accord.runners.torch_dp import DPSGD, PrivateTraining, Training
from accord.runners.torch_weights import TorchWeights, build_torch_model

DEFAULT_OPTIMIZER: dict[str, Any] = {"name": "Adam", "lr": 1e-3}
TRAIN_METRICS: tuple[str, ...] = ("loss", "accuracy")


class TorchTaskRunner(TorchWeights):
    """Trains and validates a torch model over a DataLoader; weights cross as NumPy arrays."""

    def __init__(
        self,
        model: nn.Module | Callable[..., nn.Module] | str,
        optimizer: dict[str, Any] | OptimizerFactory | None = None,
        loss: str | LossFn = "cross_entropy",
        device: str = "cpu",
        seed: int = 0,
        model_kwargs: dict[str, Any] | None = None,
        num_threads: int | None = None,
        progress: bool | None = None,
        dp_sgd: dict[str, Any] | None = None,
    ) -> None:
        if num_threads is not None:
            torch.set_num_threads(int(num_threads))
        self.device = resolve_device(device)
        self.seed = int(seed)
        self.progress = progress
        self._optimizer_config: dict[str, Any] | OptimizerFactory = (
            optimizer if callable(optimizer) else dict(DEFAULT_OPTIMIZER if optimizer is None else optimizer)
        )
        self._loss, self._loss_kind = make_loss(loss)
        self.model = build_torch_model(model, model_kwargs or {}, self.seed, self.device)
        self.optimizer = self._new_optimizer()
        self._epochs_run = 0
        #: DP-SGD through Opacus (runners/torch_dp.py), when the plan asks for it
        self.private = None if dp_sgd is None else PrivateTraining(DPSGD.from_plan(dp_sgd), self.model)

    def keep_state_in(self, folder: Path) -> None:
        """DP-SGD's spent budget is kept in ``folder``, this site's own state (none without DP-SGD)."""
        if self.private is not None:
            self.private.keep_state_in(folder)

    def _new_optimizer(self) -> torch.optim.Optimizer:
        """A fresh optimizer from the plan's configuration."""
        return build_optimizer(self.model.parameters(), self._optimizer_config)

    # -- tasks -------------------------------------------------------------------------

    def train(
        self,
        data: DataLoader,
        epochs: int = 1,
        metrics: Iterable[str] | None = None,
        proximal_mu: float = 0.0,
        **ignored: Any,
    ) -> TaskOutput:
        """Train ``epochs`` local epochs; metrics are means over the last epoch.

        ``proximal_mu`` > 0 (FedProx's per-round config): ``mu / 2 * ||w - w_global||^2`` is
        added to the loss at each step, ``w_global`` the weights at the task's start; ``loss``
        stays the data loss and ``proximal_term`` is the term at the end of the task."""
        epochs = int(epochs)
        if epochs < 1:
            raise AccordError(f"epochs is {epochs}; it must be >= 1", "set the train task's epochs in the plan")
        wanted = [metrics] if isinstance(metrics, str) else list(metrics or ["loss"])
        unknown = [m for m in wanted if m not in TRAIN_METRICS]
        if unknown:
            raise AccordError(
                f"unknown train metrics {unknown}; expected some of {', '.join(TRAIN_METRICS)}",
                "fix the train task's metrics in the plan",
            )
        mu = check_proximal_mu(proximal_mu)
        if mu > 0 and self.private is not None:
            raise AccordError(
                "FedProx's proximal_mu does not combine with task_runner.settings.dp_sgd (DP-SGD replaces the gradient)",
                "use another strategy with dp_sgd, or remove dp_sgd",
            )
        proximal = ProximalTerm(self.model.parameters(), mu) if mu > 0 else None
        self.model.train()
        total = epochs * batches_per_epoch(data.train_size, getattr(data, "batch_size", 1))
        totals = (0.0, 0, 0, 0)
        with (
            self._training(data, epochs) as (model, optimizer, batches),
            progress_bar(show_progress(self.progress), total) as advance,
        ):
            for _ in range(epochs):
                epoch_seed = derive_seed(self.seed, self._epochs_run)
                self._epochs_run += 1
                with torch.random.fork_rng(devices=self._rng_devices()):
                    torch.manual_seed(epoch_seed)  # dropout etc. reproducible, global RNG untouched
                    totals = self._run_epoch(batches(epoch_seed), advance, proximal, model, optimizer)
        loss_sum, correct, scored, count = totals
        result = {"loss": loss_sum / count if count else 0.0}
        if "accuracy" in wanted and scored:
            result["accuracy"] = correct / scored
        if proximal is not None:
            result["proximal_term"] = proximal.value()
        if self.private is not None:
            result["dp_sgd_epsilon"] = self.private.epsilon()
        return TaskOutput(metrics=result, sample_count=int(data.train_size))

    def validate(self, data: DataLoader, **ignored: Any) -> TaskOutput:
        """Accuracy (unless the loss is mse) and mean loss over ``data.valid_batches()``."""
        self.model.eval()
        loss_sum, correct, scored, count = 0.0, 0, 0, 0
        with torch.no_grad():
            for x, y in data.valid_batches():
                xb, yb = self._tensors(x, y)
                out = self.model(xb)
                loss_sum += float(self._loss(out, yb)) * len(yb)
                count += len(yb)
                hits = count_correct(out, yb, self._loss_kind)
                if hits is not None:
                    correct, scored = correct + hits, scored + len(yb)
        metrics: dict[str, float] = {}
        if self._loss_kind != "mse":
            metrics["accuracy"] = correct / scored if scored else 0.0
        metrics["loss"] = loss_sum / count if count else 0.0
        return TaskOutput(metrics=metrics, sample_count=int(data.valid_size))

    # -- internals ---------------------------------------------------------------------

    @contextmanager
    def _training(self, data: DataLoader, epochs: int) -> Iterator[Training]:
        """What a training task steps: the model and optimizer over the loader's batches, or
        their private versions over Poisson-sampled ones (DP-SGD)."""
        if self.private is None:
            yield self.model, self.optimizer, lambda seed: data.train_batches(seed=seed)
            return
        with self.private.task(self.model, self.optimizer, data, epochs, derive_seed(self.seed, self._epochs_run)) as training:
            yield training

    def _run_epoch(
        self,
        batches: Iterator[tuple[np.ndarray, np.ndarray]],
        advance: Callable[[], None],
        proximal: ProximalTerm | None,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
    ) -> tuple[float, int, int, int]:
        loss_sum, correct, scored, count = 0.0, 0, 0, 0
        for x, y in batches:
            xb, yb = self._tensors(x, y)
            optimizer.zero_grad(set_to_none=True)
            out = model(xb)
            loss = self._loss(out, yb)
            loss.backward()
            if proximal is not None:
                proximal.add_gradient()
            optimizer.step()
            if not len(yb):  # a Poisson-sampled batch may be empty: a noise-only step
                advance()
                continue
            loss_sum += float(loss.detach()) * len(yb)
            count += len(yb)
            hits = count_correct(out.detach(), yb, self._loss_kind)
            if hits is not None:
                correct, scored = correct + hits, scored + len(yb)
            advance()
        return loss_sum, correct, scored, count

    def _tensors(self, x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        xb = to_tensor(x).to(self.device)
        param = next(self.model.parameters(), None)
        if param is not None and xb.is_floating_point() and param.is_floating_point():
            xb = xb.to(param.dtype)
        return xb, to_tensor(y).to(self.device)

    def _rng_devices(self) -> list[Any]:
        return [self.device] if self.device.type == "cuda" else []
