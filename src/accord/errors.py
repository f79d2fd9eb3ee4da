"""User-facing errors: one clear line naming the thing and the fix."""

from __future__ import annotations


class AccordError(Exception):
    """A mistake the user can fix (bad plan, missing file, refused request).

    The CLI prints ``str(error)`` as one line and exits with code 2; it never shows a
    stack trace for these.
    """

    def __init__(self, message: str, fix: str | None = None) -> None:
        self.message = message
        self.fix = fix
        super().__init__(f"{message} (fix: {fix})" if fix else message)


class PlanError(AccordError):
    """The plan is missing, malformed or fails validation."""


class RefusedError(AccordError):
    """The aggregator refused a request (identity, plan hash, payload).

    ``kind`` says why, so a transport can map it to a status code: ``"identity"``
    (unknown or mismatched collaborator), ``"plan"`` (different plan hash),
    ``"payload"`` (malformed or mismatched data), ``"state"`` (not expected now,
    e.g. a result for a closed round) or ``"busy"`` (the aggregator cannot take it now:
    too many calls of this caller at once, a full disk; the caller retries with backoff).
    """

    KINDS = frozenset({"identity", "plan", "payload", "state", "busy"})

    def __init__(self, message: str, fix: str | None = None, *, kind: str = "payload") -> None:
        if kind not in self.KINDS:
            raise ValueError(f"unknown refusal kind {kind!r}; expected one of {sorted(self.KINDS)}")
        self.kind = kind
        super().__init__(message, fix)


class PKIError(AccordError):
    """A certificate or key is missing, unreadable or does not check out."""
