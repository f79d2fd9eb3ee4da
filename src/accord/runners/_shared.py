"""Framework-neutral pieces shared by the task runners: model building, epoch seeds, a progress bar, FedProx's mu."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import numpy as np

from accord.errors import AccordError
from accord.plan.code_settings import import_code

MODEL_FIX = "check task_runner.settings.model in the plan and that the workspace's src/ is on the path"


def build_model(model: Any, kwargs: dict[str, Any], model_type: type, type_name: str) -> Any:
    """The model itself: an instance of ``model_type``, a builder called with ``kwargs``, or its dotted path."""
    if isinstance(model, str):
        model = import_code("task_runner.settings.model", model, MODEL_FIX)
    if not isinstance(model, model_type):
        if not callable(model):
            raise AccordError(f"model {model!r} is neither {type_name} nor callable", MODEL_FIX)
        try:
            model = model(**kwargs)
        except TypeError as exc:
            raise AccordError(f"building the model failed: {exc}", "check task_runner.settings.model_kwargs") from exc
    if not isinstance(model, model_type):
        raise AccordError(f"the model builder returned {type(model).__name__}, not {type_name}", MODEL_FIX)
    return model


def derive_seed(seed: int, counter: int) -> int:
    """A well-mixed 32-bit seed for the ``counter``-th epoch of a runner seeded with ``seed``."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, counter]).generate_state(1)[0])


def show_progress(progress: bool | None) -> bool:
    """Whether to draw a progress bar: as asked, else only when stdout is a terminal."""
    return sys.stdout.isatty() if progress is None else bool(progress)


def progress_bar(show: bool, total: int) -> AbstractContextManager[Callable[[], None]]:
    """A rich progress bar over ``total`` local batches when ``show``; otherwise a no-op."""
    if not show:
        return nullcontext(lambda: None)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    @contextmanager
    def bar() -> Iterator[Callable[[], None]]:
        with Progress(
            TextColumn("local training"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            transient=True,
        ) as progress:
            task = progress.add_task("train", total=total)
            yield lambda: progress.advance(task)

    return bar()


def batches_per_epoch(train_size: int, batch_size: int) -> int:
    """How many batches one epoch over ``train_size`` samples has."""
    return -(-int(train_size) // max(int(batch_size), 1))


def check_proximal_mu(value: float) -> float:
    """``value`` as FedProx's proximal mu: AccordError unless it is a finite number >= 0."""
    mu = float(value)
    if not (math.isfinite(mu) and mu >= 0):
        raise AccordError(
            f"proximal_mu is {value}; it must be a finite number >= 0",
            "set aggregator.settings.strategy.settings.proximal_mu (FedProx) in the plan",
        )
    return mu
