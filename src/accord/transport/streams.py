"""Reading a call's messages within a bound: a peer that lets the bound pass is cut."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from accord.transport import wire


class Stalled(Exception):
    """A peer let a bound pass (first message, chunk idle time, upload length): the call is cut."""


async def read_within(context: grpc.aio.ServicerContext, seconds: float, missing: str) -> Any:
    """The next message, or None at the end of the stream; Stalled saying ``missing`` if it does not come in time."""
    try:
        async with asyncio.timeout(seconds):  # no task of its own per message, unlike wait_for
            message = await context.read()
    except TimeoutError:
        raise Stalled(missing) from None
    if isinstance(message, wire.Undecodable):
        raise message.refusal()
    return None if message is grpc.aio.EOF else message
