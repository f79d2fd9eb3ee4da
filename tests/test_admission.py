"""Call limits and the refusal log's repeat filter (transport/admission.py), without a network."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from accord.errors import RefusedError
from accord.plan.schema import NetworkSettings
from accord.transport.admission import REPEAT_LOG_SECONDS, Admission, CallLimits, RepeatFilter, _peer_of, check_claim


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


def test_a_federation_of_thousands_calling_in_turn_finds_every_certificate_parsed() -> None:
    """Sites call in turn: an LRU cache smaller than the federation would miss on every call."""
    key = ec.generate_private_key(ec.SECP256R1())
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    def pem(serial: int) -> bytes:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"site{serial}")])
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(serial).not_valid_before(start).not_valid_after(start + dt.timedelta(days=1))
            .sign(key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM)

    pems = [pem(serial) for serial in range(1, 2001)]
    _peer_of.cache_clear()
    for _ in range(2):
        assert [_peer_of(p) for p in pems] == [(serial, False) for serial in range(1, 2001)]
    assert _peer_of.cache_info().hits == len(pems)  # the second turn parsed nothing again
