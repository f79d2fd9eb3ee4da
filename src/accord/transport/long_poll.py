"""A long poll that holds no thread: it looks again only when it is told something changed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import TypeVar

T = TypeVar("T")


class LongPoll:
    """Parks pollers until ``wake`` (a round opened, the federation ended) or their deadline. One event loop uses it."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()

    def wake(self) -> None:
        """Every waiting poller looks again (call it on the loop)."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait(self, look: Callable[[bool], Awaitable[T | None]], seconds: float) -> T:
        """The first answer of ``look(final)``, asked at once and after each wake; ``final`` is True past ``seconds``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            changed = self._changed  # taken before looking, so that no change is missed
            answer = await look(loop.time() >= deadline)
            if answer is not None:
                return answer
            with suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    await changed.wait()
