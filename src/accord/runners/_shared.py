"""Framework-neutral pieces shared by the task runners: epoch seeds and a progress bar."""

from __future__ import annotations

import sys
from contextlib import contextmanager, nullcontext
from typing import Callable, ContextManager, Iterator

import numpy as np


def derive_seed(seed: int, counter: int) -> int:
    """A well-mixed 32-bit seed for the ``counter``-th epoch of a runner seeded with ``seed``."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, counter]).generate_state(1)[0])


def show_progress(progress: bool | None) -> bool:
    """Whether to draw a progress bar: as asked, else only when stdout is a terminal."""
    return sys.stdout.isatty() if progress is None else bool(progress)


def progress_bar(show: bool, total: int) -> ContextManager[Callable[[], None]]:
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
