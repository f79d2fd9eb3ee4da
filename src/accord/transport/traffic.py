"""Bytes on the wire: the serialized size of every gRPC message the aggregator receives and sends.

The gRPC server counts each message as it is deserialized or serialized (``len`` of bytes it
already holds: O(1) per message, nothing per site); the reader takes what arrived and left
since its last reading (aggregator/reporting.py: a closed round's bytes). gRPC's HTTP/2
framing and TLS records are not counted.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class Traffic:
    """Thread-safe byte counters: ``received``, ``sent`` since the start, ``take()`` since the last take."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.received = 0
        self.sent = 0
        self._taken = (0, 0)

    def count_received(self, size: int) -> None:
        with self._lock:
            self.received += size

    def count_sent(self, size: int) -> None:
        with self._lock:
            self.sent += size

    def take(self) -> tuple[int, int]:
        """(received, sent) bytes since the previous ``take`` (since the start for the first)."""
        with self._lock:
            (received, sent), self._taken = self._taken, (self.received, self.sent)
            return self.received - received, self.sent - sent

    def reader(self, deserialize: Callable[[bytes], T]) -> Callable[[bytes], T]:
        """``deserialize``, counting the bytes it reads."""

        def read(data: bytes) -> T:
            self.count_received(len(data))
            return deserialize(data)

        return read

    def writer(self, serialize: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
        """``serialize``, counting the bytes it writes."""

        def write(message: Any) -> bytes:
            data = serialize(message)
            self.count_sent(len(data))
            return data

        return write
