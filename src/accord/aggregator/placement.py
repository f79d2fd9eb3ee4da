"""Where the aggregator holds the global model and computes the next one: memory, or disk.

A model of at most ``aggregator.settings.in_memory_limit_mb`` (its file's size) is loaded into
memory and each round's next model is computed there (the fastest path). A larger one is
memory-mapped from its file and every model a round computes (the mean, a server optimizer's
step and moments) is written, block by block, into files in the state folder
(``Journal.disk_space``, tensors/space.py), the one that becomes the next model renamed into
place: the aggregator's anonymous memory stays a few blocks, whatever the model's size, and
the model's pages are page cache, which the kernel writes back and evicts as it needs. A
restarted aggregator's strategy tensors (a server optimizer's moments) stay mapped from their
saved file in the second case, and are read into memory in the first.
"""

from __future__ import annotations

import logging

import numpy as np

from accord.aggregator.journal import Journal
from accord.aggregator.saved import SavedRound
from accord.errors import AccordError
from accord.plan.loader import Plan
from accord.tensors.space import MEMORY, TensorSpace
from accord.tensors.state import ModelState, StateView, load_state

log = logging.getLogger("accord.aggregator")

MB = 1 << 20


def initial_model(plan: Plan, saved: SavedRound | None, journal: Journal) -> tuple[ModelState, TensorSpace]:
    """The model the aggregator starts from (the ``saved`` round's, else the plan's initial
    model) and the space its rounds compute in: in memory up to the plan's
    ``in_memory_limit_mb``, else mapped from disk."""
    settings = plan.model.aggregator.settings
    path, limit_mb = plan.resolve_path(settings.init_state_path), settings.in_memory_limit_mb
    source = saved.directory / saved.model_file if saved is not None else path
    size = source.stat().st_size if source.is_file() else 0
    if size <= limit_mb * MB:
        if saved is not None and saved.strategy is not None:  # the journal maps them: held in memory here
            saved.strategy.tensors = {name: np.array(array) for name, array in saved.strategy.tensors.items()}
        return (saved.model() if saved is not None else load_state(path)), MEMORY
    try:
        model = dict(StateView(source))
    except (OSError, ValueError, KeyError) as exc:
        raise AccordError(f"model file {source} is not a readable safetensors file: {exc}") from None
    log.info(
        "the model (%.1f MB) is larger than aggregator.settings.in_memory_limit_mb (%d): it is read from %s and each "
        "round's next model is computed on disk, in %s",
        size / MB,
        limit_mb,
        source,
        journal.directory,
    )
    return model, journal.disk_space()
