"""The runtime's watch hook: listeners told when a round opens or the federation ends, so a
server can long-poll without holding a thread per waiting collaborator."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any


class Watchers:
    """Listeners of an epoch (the runtime's round number and whether it finished).

    Adding or removing one is O(1); they are called only when the epoch changes (a round
    boundary), never per result. Not thread-safe: the runtime calls it under its lock.
    """

    def __init__(self) -> None:
        self._listeners: dict[int, Callable[[], None]] = {}
        self._keys = itertools.count()
        self._epoch: Any = None

    def add(self, listener: Callable[[], None]) -> int:
        """Register ``listener``; returns the key that ``remove`` takes."""
        key = next(self._keys)
        self._listeners[key] = listener
        return key

    def remove(self, key: int) -> None:
        self._listeners.pop(key, None)

    def moved_to(self, epoch: Any) -> None:
        """Call every listener if ``epoch`` differs from the last one seen."""
        if epoch != self._epoch:
            self._epoch = epoch
            for listener in list(self._listeners.values()):
                listener()
