"""Call limits and the refusal log's repeat filter (transport/admission.py), without a network."""

from __future__ import annotations

import pytest

from accord.errors import RefusedError
from accord.plan.schema import NetworkSettings
from accord.transport.admission import REPEAT_LOG_SECONDS, Admission, CallLimits, RepeatFilter, check_claim


def test_calls_are_limited_per_identity_and_in_total() -> None:
    admission = Admission(CallLimits(max_calls_per_collaborator=2, max_concurrent_calls=3))
    admission.enter("a")
    admission.enter("a")
    with pytest.raises(RefusedError, match="a already has 2 calls in progress") as busy:
        admission.enter("a")
    assert busy.value.kind == "busy"
    admission.enter("b")
    with pytest.raises(RefusedError, match="the aggregator has 3 calls in progress"):
        admission.enter("c")
    admission.leave("a")
    admission.enter("c")  # a freed call makes room
    assert admission.in_progress == 3


def test_a_repeated_refusal_is_logged_once_per_period_with_the_count_left_out() -> None:
    repeats = RepeatFilter()
    assert repeats.admit("a", "busy", now=100.0) == 0
    assert repeats.admit("a", "busy", now=101.0) is None
    assert repeats.admit("a", "busy", now=102.0) is None
    assert repeats.admit("a", "other reason", now=102.0) == 0  # another reason is logged
    assert repeats.admit("b", "busy", now=102.0) == 0  # another caller too
    assert repeats.admit("a", "busy", now=100.0 + REPEAT_LOG_SECONDS) == 2


def test_a_header_must_name_the_certificate_owner() -> None:
    check_claim("a", "a")
    with pytest.raises(RefusedError, match="certificate common name 'a' does not match claimed collaborator 'b'"):
        check_claim("b", "a")


def test_the_plan_bounds_are_strict() -> None:
    defaults = NetworkSettings()
    assert CallLimits() == CallLimits(
        defaults.first_message_seconds,
        defaults.chunk_idle_seconds,
        defaults.max_calls_per_collaborator,
        defaults.max_concurrent_calls,
        defaults.min_upload_bytes_per_second,
    )
    bad = [("max_calls_per_collaborator", 1), ("first_message_seconds", 0), ("chunk_idle_seconds", "soon"), ("min_upload_bytes_per_second", 0)]
    for key, value in bad:
        with pytest.raises(ValueError, match=key):
            NetworkSettings(**{key: value})
