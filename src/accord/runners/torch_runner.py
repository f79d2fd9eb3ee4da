"""TorchTaskRunner: the TaskRunner protocol for a PyTorch model, optimizer and loss."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from torch import nn

from accord.data.base import DataLoader
from accord.errors import AccordError
from accord.runners._shared import batches_per_epoch, build_model, derive_seed, progress_bar, show_progress
from accord.runners._torch_parts import (
    LossFn,
    build_optimizer,
    count_correct,
    load_optimizer_state,
    make_loss,
    materialize_optimizer,
    optimizer_state_arrays,
    resolve_device,
    to_tensor,
)
from accord.runners.base import OPTIMIZER_PREFIX, TaskOutput
from accord.tensors.state import ModelState

DEFAULT_OPTIMIZER: dict[str, Any] = {"name": "Adam", "lr": 1e-3}
TRAIN_METRICS: tuple[str, ...] = ("loss", "accuracy")


class TorchTaskRunner:
    """Trains and validates a torch model over a DataLoader; weights cross as NumPy arrays."""

    def __init__(
        self,
        model: nn.Module | Callable[..., nn.Module] | str,
        optimizer: dict[str, Any] | None = None,
        loss: str | LossFn = "cross_entropy",
        device: str = "cpu",
        seed: int = 0,
        model_kwargs: dict[str, Any] | None = None,
        num_threads: int | None = None,
        progress: bool | None = None,
    ) -> None:
        if num_threads is not None:
            torch.set_num_threads(int(num_threads))
        self.device = resolve_device(device)
        self.seed = int(seed)
        self.progress = progress
        self._optimizer_config = dict(DEFAULT_OPTIMIZER if optimizer is None else optimizer)
        self._loss, self._loss_kind = make_loss(loss)
        torch.manual_seed(self.seed)  # every participant builds identical initial weights
        self.model = build_model(model, model_kwargs or {}, nn.Module, "an nn.Module").to(self.device)
        self.optimizer = build_optimizer(self.model.parameters(), self._optimizer_config)
        self._epochs_run = 0

    # -- weights -----------------------------------------------------------------------

    def get_weights(self, with_optimizer: bool = False) -> ModelState:
        """The state_dict as NumPy copies, in its order; optimizer state under ``__opt__.``.

        Optimizer state is materialized first if it does not exist yet (see
        ``materialize_optimizer``), so the set of names is the same before and after training.
        """
        state: ModelState = {name: _numpy(t) for name, t in self.model.state_dict().items()}
        if with_optimizer:
            materialize_optimizer(self.optimizer)
            state.update(optimizer_state_arrays(self.optimizer, self._param_names()))
        return state

    def set_weights(self, state: ModelState, with_optimizer: bool = False) -> None:
        """Load tensors by name (strict on the model's names), keeping dtype and device."""
        model_part = {k: v for k, v in state.items() if not k.startswith(OPTIMIZER_PREFIX)}
        expected = self.model.state_dict()
        missing = [k for k in expected if k not in model_part]
        extra = [k for k in model_part if k not in expected]
        if missing or extra:
            raise AccordError(
                "model state does not match the model"
                + (f"; missing {missing[:5]}" if missing else "")
                + (f"; unexpected {extra[:5]}" if extra else ""),
                "use a model state saved from the same model (check task_runner.settings.model)",
            )
        try:
            tensors = {k: to_tensor(v) for k, v in model_part.items()}
            self.model.load_state_dict(tensors, strict=True)
        except RuntimeError as exc:
            raise AccordError(
                f"model state does not fit the model: {exc}".splitlines()[0],
                "use a model state saved from the same model (check task_runner.settings.model)",
            ) from exc
        if with_optimizer:
            load_optimizer_state(self.optimizer, dict(self.model.named_parameters()), state)

    def reset_optimizer(self) -> None:
        """Rebuild the optimizer from its configuration (fresh state)."""
        self.optimizer = build_optimizer(self.model.parameters(), self._optimizer_config)

    # -- tasks -------------------------------------------------------------------------

    def train(
        self,
        data: DataLoader,
        epochs: int = 1,
        metrics: Iterable[str] | None = None,
        **ignored: Any,
    ) -> TaskOutput:
        """Train ``epochs`` local epochs; metrics are means over the last epoch."""
        epochs = int(epochs)
        if epochs < 1:
            raise AccordError(
                f"epochs is {epochs}; it must be >= 1", "set the train task's epochs in the plan"
            )
        wanted = [metrics] if isinstance(metrics, str) else list(metrics or ["loss"])
        unknown = [m for m in wanted if m not in TRAIN_METRICS]
        if unknown:
            raise AccordError(
                f"unknown train metrics {unknown}; expected some of {', '.join(TRAIN_METRICS)}",
                "fix the train task's metrics in the plan",
            )
        self.model.train()
        total = epochs * batches_per_epoch(data.train_size, getattr(data, "batch_size", 1))
        totals = (0.0, 0, 0, 0)
        with progress_bar(show_progress(self.progress), total) as advance:
            for _ in range(epochs):
                epoch_seed = derive_seed(self.seed, self._epochs_run)
                self._epochs_run += 1
                with torch.random.fork_rng(devices=self._rng_devices()):
                    torch.manual_seed(epoch_seed)  # dropout etc. reproducible, global RNG untouched
                    totals = self._run_epoch(data.train_batches(seed=epoch_seed), advance)
        loss_sum, correct, scored, count = totals
        result = {"loss": loss_sum / count if count else 0.0}
        if "accuracy" in wanted and scored:
            result["accuracy"] = correct / scored
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

    def _run_epoch(
        self, batches: Iterator[tuple[np.ndarray, np.ndarray]], advance: Callable[[], None]
    ) -> tuple[float, int, int, int]:
        loss_sum, correct, scored, count = 0.0, 0, 0, 0
        for x, y in batches:
            xb, yb = self._tensors(x, y)
            self.optimizer.zero_grad(set_to_none=True)
            out = self.model(xb)
            loss = self._loss(out, yb)
            loss.backward()
            self.optimizer.step()
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

    def _param_names(self) -> dict[int, str]:
        return {id(p): name for name, p in self.model.named_parameters()}

    def _rng_devices(self) -> list[Any]:
        return [self.device] if self.device.type == "cuda" else []


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.float()
    return tensor.numpy().copy()
