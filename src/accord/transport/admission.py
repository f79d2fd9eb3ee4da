"""Who may call the aggregator, and how many calls at once: checked as a call arrives.

The caller's identity comes from the TLS handshake (its certificate's common name), so it
is known before any message of the call is read. ``Admission`` then bounds concurrent calls
per identity and in total, refusing the excess at once as "busy" instead of queueing it.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Mapping, Set
from dataclasses import dataclass

from cryptography import x509

from accord.errors import RefusedError
from accord.pki.install import renew_fix

Revoked = Callable[[], Set[int]]

#: the same refusal of the same caller is logged at most this often (with the count left out)
REPEAT_LOG_SECONDS = 10.0
#: callers whose last refusal is remembered (a bound: refused callers need not be plan members)
REPEAT_MEMORY = 10_000
#: peer certificates whose serial and kind are kept parsed (~1 KB each). Sites call in turn, so
#: a cache smaller than the federation would miss on every call: this covers 16,384 sites
PEER_CACHE = 16_384


@dataclass(frozen=True)
class CallLimits:
    """Server-side bounds on every call (network.settings of the plan)."""

    #: the first message of a call must arrive within this many seconds of the call
    first_message_seconds: float = 10.0
    #: the most seconds between two chunks of an upload, or for a chunk of a download to be taken
    chunk_idle_seconds: float = 30.0
    #: concurrent calls of one identity (an honest site needs a long poll and one transfer)
    max_calls_per_collaborator: int = 4
    #: concurrent calls in all
    max_concurrent_calls: int = 4096
    #: an upload holding a slot must end within first_message_seconds + the model's bytes at this rate
    min_upload_bytes_per_second: float = 1024 * 1024


def peer_name(auth: Mapping[str, Iterable[bytes]], revoked: Revoked | None) -> str:
    """The caller's certificate common name; RefusedError unless it is a current collaborator certificate."""
    names = list(auth.get("x509_common_name") or [])
    if not names:
        raise RefusedError("the connection presents no certificate common name", kind="identity")
    name = names[0].decode("utf-8", "replace")
    pems = list(auth.get("x509_pem_cert") or [])
    peer = _peer_of(pems[0]) if pems else None
    if peer is None:
        raise RefusedError(f"the certificate of {name!r} cannot be read to check its kind and revocation", kind="identity")
    serial, server_cert = peer
    if server_cert:
        raise RefusedError(
            f"{name!r} presents a server (aggregator) certificate; only collaborator certificates may call",
            kind="identity",
        )
    if revoked is not None and serial in revoked():
        raise RefusedError(
            f"the certificate of {name!r} (serial {serial:x}) has been revoked by the federation's CA",
            renew_fix("collaborator", name),
            kind="identity",
        )
    return name


def peer_serial(auth: Mapping[str, Iterable[bytes]]) -> str:
    """The serial (hex) of the caller's certificate, which ``peer_name`` has admitted ("" if unreadable)."""
    pems = list(auth.get("x509_pem_cert") or [])
    peer = _peer_of(pems[0]) if pems else None
    return "" if peer is None else format(peer[0], "x")


def check_claim(claimed: str, name: str) -> None:
    """Refuse a message whose header names another sender than the certificate."""
    if claimed != name:
        raise RefusedError(
            f"certificate common name {name!r} does not match claimed collaborator {claimed[:64]!r}", kind="identity"
        )


@functools.lru_cache(maxsize=PEER_CACHE)
def _peer_of(pem: bytes) -> tuple[int, bool] | None:
    """(serial, is a server certificate) of a peer's PEM certificate, parsed once per certificate."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return None
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return cert.serial_number, False
    return cert.serial_number, x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in usages


class Admission:
    """Counts the calls in progress, per identity and in total. Not thread-safe: one event loop uses it."""

    def __init__(self, limits: CallLimits) -> None:
        self._limits = limits
        self._calls: dict[str, int] = {}
        self._total = 0

    def enter(self, name: str) -> None:
        """Count a call of ``name``; RefusedError(kind="busy") when a limit is reached."""
        limits = self._limits
        held = self._calls.get(name, 0)
        if held >= limits.max_calls_per_collaborator:
            raise RefusedError(
                f"{name} already has {held} calls in progress, the most one collaborator may have "
                "(network.settings.max_calls_per_collaborator)",
                "wait for them to end; an honest collaborator needs a long poll and one transfer",
                kind="busy",
            )
        if self._total >= limits.max_concurrent_calls:
            raise RefusedError(
                f"the aggregator has {self._total} calls in progress, its limit (network.settings.max_concurrent_calls)",
                "try again shortly",
                kind="busy",
            )
        self._calls[name] = held + 1
        self._total += 1

    def leave(self, name: str) -> None:
        """A call of ``name`` that ``enter`` counted has ended."""
        self._total -= 1
        held = self._calls.pop(name) - 1
        if held:
            self._calls[name] = held

    @property
    def in_progress(self) -> int:
        return self._total


class RepeatFilter:
    """Says which refusals to log: the first of each reason for a caller, then one per REPEAT_LOG_SECONDS.

    A site that floods would otherwise write a log line per refused call.
    """

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}  # (caller, reason) -> (last logged, left out since)

    def admit(self, who: str, reason: str, now: float | None = None) -> int | None:
        """None to leave this refusal out of the log, else how many were left out before it."""
        now = time.monotonic() if now is None else now
        key = (who, reason)
        last, quiet = self._seen.get(key, (-REPEAT_LOG_SECONDS, 0))
        if now - last < REPEAT_LOG_SECONDS:
            self._seen[key] = (last, quiet + 1)
            return None
        if len(self._seen) >= REPEAT_MEMORY:
            self._seen.clear()
        self._seen[key] = (now, 0)
        return quiet
