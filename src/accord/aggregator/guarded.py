"""A sink that cannot stop the aggregator: its failure is warned of once, then counted (a line
again at the 10th, 100th, ... failure), and never fails the round close that called it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger("accord.aggregator")

T = TypeVar("T")


class Guarded(Generic[T]):
    """Calls ``call`` with each value; an exception from it means ``what`` at ``name``."""

    def __init__(self, call: Callable[[T], None], name: str, what: str = "a round's metrics were not written") -> None:
        self._call = call
        self.name = name
        self.what = what
        self.failures = 0

    def __call__(self, value: T) -> None:
        try:
            self._call(value)
        except Exception as exc:  # a library's or its server's: never a reason to stop the federation
            self.failures += 1
            if self.failures == 1:
                log.warning("%s: %s: %s", self.name, self.what, str(exc)[:500] or type(exc).__name__)
            elif _is_power_of_10(self.failures):
                log.warning("%s: %d failures so far (%s)", self.name, self.failures, self.what)


def _is_power_of_10(n: int) -> bool:
    while n % 10 == 0:
        n //= 10
    return n == 1
