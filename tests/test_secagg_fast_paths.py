"""The SecAgg fast paths: the indexed map (kind 7), the server's unparsed sealed shares and
reveals, the complete graph's O(1) Shamir index, the cached neighbourhood search and the
collaborator verifier's chain re-read only when the file's status changes."""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from accord.pki import signatures
from accord.pki.ca import make_federation_pki
from accord.pki.keys import load_private_key
from accord.pki.layout import CertLayout
from accord.pki.signatures import CollaboratorVerifier, signer_for
from accord.secagg import params as params_module
from accord.secagg.graph import Neighbourhood
from accord.secagg.messages import SHARE_BYTES, SecAggRefused, decode_indexed, decode_reveal, encode_indexed, encode_map
from accord.secagg.params import SecAggParams
from tests.secagg_round import ROUND, Round, masked_round, plain

NAMES = ["a", "b", "c", "d"]
WHAT = "the test map"
HEADER = encode_indexed({}, NAMES)[:5]


def _indexed(fields: tuple[int, ...], body: bytes = b"") -> bytes:
    return HEADER + struct.pack(f">{len(fields)}I", *fields) + body


def test_indexed_maps_round_trip() -> None:
    entries = {"d": b"", "b": b"12", "a": bytearray(b"xyz"), "c": memoryview(b"q")}
    data = encode_indexed(entries, NAMES)
    assert data[4] == 7
    decoded = decode_indexed(data, NAMES, WHAT)
    assert decoded == {name: bytes(value) for name, value in entries.items()}
    assert list(decoded) == NAMES and all(type(value) is bytes for value in decoded.values())
    assert decode_indexed(bytearray(data), NAMES, WHAT) == decoded  # a bytes-like message too
    assert decode_indexed(encode_indexed({"c": b""}, NAMES), NAMES) == {"c": b""}
    empty = encode_indexed({}, NAMES)
    assert len(empty) == 9 and decode_indexed(empty, NAMES) == {}
    assert decode_indexed(encode_indexed({"a": b"x" * 11}, NAMES), NAMES, max_value=11) == {"a": b"x" * 11}
    with pytest.raises(ValueError, match="'e' is not among the 4 names"):
        encode_indexed({"a": b"1", "e": b"2"}, NAMES)


GOOD = encode_indexed({"a": b"xy", "c": b"z"}, NAMES)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (HEADER + b"\0\0", "is truncated (no entry count)"),
        (_indexed((5, 0, 1, 2, 3, 0, 0, 0, 0, 0)), "has 5 entries, more than the 4 names it indexes"),
        (_indexed((2, 0)), "is truncated: 13 bytes, fewer than the 25 its 2 entries' positions and offsets take"),  # positions and ends cut off
        (_indexed((2, 1, 0, 1, 2), b"xy"), "has positions out of order, repeated or past its 4 names"),
        (_indexed((2, 1, 1, 1, 2), b"xy"), "has positions out of order, repeated or past its 4 names"),
        (_indexed((1, 4, 1), b"x"), "has positions out of order, repeated or past its 4 names"),
        (_indexed((2, 0, 1, 3, 2), b"xyz"), "has a value of a negative length or over"),
        (GOOD + b"\0", "has 4 bytes of values, not the 3 its offsets say"),
        (GOOD[:-1], "has 2 bytes of values, not the 3 its offsets say"),
        (_indexed((0,), b"\0"), "has 1 bytes of values, not the 0 its offsets say"),
        (encode_map({"a": b"xy"}), "is a per-entry SecAgg map (kind 4), which Accord sent before"),
        (b"ASG\x03\x05" + bytes(8), "is a SecAgg message of kind 5, expected kind 7"),
        (b"nope", "is not a SecAgg message"),
    ],
)
def test_malformed_indexed_maps_are_refused_by_name(data: bytes, reason: str) -> None:
    with pytest.raises(SecAggRefused) as refused:
        decode_indexed(data, NAMES, WHAT)
    assert refused.value.message.startswith(f"{WHAT} ") and reason in refused.value.message


def test_an_indexed_value_over_max_value_is_refused() -> None:
    with pytest.raises(SecAggRefused, match=f"{WHAT} has a value of a negative length or over 10 bytes"):
        decode_indexed(encode_indexed({"b": b"x" * 11}, NAMES), NAMES, WHAT, max_value=10)


def _bytes_like(value: bytes, at: int) -> bytes:
    return bytearray(value) if at % 2 else memoryview(value)  # type: ignore[return-value]


def test_bytes_like_shares_and_reveals_sum_as_bytes_do() -> None:
    """One round fed bytearrays and memoryviews, one fed bytes: the same sum (a site dropped
    at the mask phase, so both secret kinds are revealed)."""
    reference = Round(plain(5), 5, 16, seed=3)
    want = reference.run({"mask": {reference.names[0]}})
    federation = Round(plain(5), 5, 16, seed=3)
    server, names = federation.server, federation.names
    roster = federation.advertise()
    for name in names:
        sent = federation.sent[name] = federation.sites[name].share(roster)
        server.add_shares(name, {peer: _bytes_like(value, at) for at, (peer, value) in enumerate(sent.items())})
    for name in names:
        routed = server.shares_for(name)
        assert all(type(value) is bytes and value == federation.sent[owner][name] for owner, value in routed.items())
    survivors, dropped = federation.mask([names[0]])
    assert dropped == [names[0]]
    for name in survivors:
        reveals = federation.sites[name].unmask(survivors, dropped)
        server.add_reveal(name, {owner: _bytes_like(value, at) for at, (owner, value) in enumerate(reveals.items())})
    total, weight = server.result()
    federation.check((total, weight))
    assert weight == want[1] and np.array_equal(total, want[0])


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda data: data + b"\0", "bytes, expected exactly"),
        (lambda data: data[:-1], "bytes, expected exactly"),
        (lambda data: data[:3] + bytes([data[3] + 1]) + data[4:], "format version"),
        (lambda data: data[:4] + b"\x02" + data[5:], "is a SecAgg message of kind 2, expected kind 3"),
        (lambda data: data[:5] + b"\x03" + data[6:], "reveals secret kind 3"),
        (lambda data: data[:6] + b"\0\0" + data[8:], "share index 0"),
    ],
)
def test_malformed_reveals_are_refused_as_decode_reveal_refuses_them(mangle, reason: str) -> None:  # type: ignore[no-untyped-def]
    federation, survivors, dropped = masked_round(5)
    server, site = federation.server, survivors[1]
    reveals = federation.sites[site].unmask(survivors, dropped)
    owner = sorted(reveals)[-1]
    what = f"the reveal by {site!r} of a share of {owner!r}"
    bad = mangle(reveals[owner])
    with pytest.raises(SecAggRefused) as decoded:
        decode_reveal(bad, what)
    assert reason in decoded.value.message
    for sent in (bad, bytearray(bad)):
        with pytest.raises(SecAggRefused) as refused:
            server.add_reveal(site, {**reveals, owner: sent})
        assert refused.value.message == decoded.value.message
    for name in survivors:  # nothing was taken from the refused replies: the round unmasks
        server.add_reveal(name, federation.sites[name].unmask(survivors, dropped))
    federation.check(server.result())


@pytest.mark.parametrize(("count", "neighbours"), [(3, 2), (5, 4), (8, 7), (8, 20), (9, 2), (12, 4), (15, 6)])
def test_the_shamir_index_is_the_holders_place_among_the_owners_neighbours(count: int, neighbours: int) -> None:
    names = [f"site{i:03d}" for i in reversed(range(count))]
    graph = Neighbourhood(SecAggParams(threshold=2, neighbours=neighbours, clip=1.0), names, ROUND)
    complete = neighbours >= count - 1
    assert graph.degree == (count - 1 if complete else neighbours)
    strangers = 0
    for owner in names:
        linked = graph.of(owner)
        assert sorted(graph.index(owner, holder) for holder in linked) == list(range(1, len(linked) + 1))
        for holder in names:
            want = linked.index(holder) + 1 if holder in linked else None
            assert graph.index(owner, holder) == want
            strangers += holder != owner and want is None
        assert graph.index(owner, owner) is None
        if complete:
            assert graph.index(owner, "nobody") is None and graph.index("nobody", owner) is None
    assert (strangers == 0) == complete  # a ring graph has non-neighbours, and they get None
    if complete:
        assert graph.index("nobody", "nobody") is None


def test_for_cohort_is_the_same_twice_and_its_search_is_cached() -> None:
    hits = params_module._neighbourhood_size.cache_info().hits
    assert SecAggParams.for_cohort(100) == SecAggParams.for_cohort(100)
    assert (SecAggParams.for_cohort(100).threshold, SecAggParams.for_cohort(100).neighbours) == (67, 99)
    assert params_module._neighbourhood_size.cache_info().hits >= hits + 3


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, bytes, bytes, bytes]:
    """Our federation's and a foreign one's chain, and our site000's certificate, data and signature."""
    ours, theirs = tmp_path_factory.mktemp("ours"), tmp_path_factory.mktemp("theirs")
    make_federation_pki(ours, "localhost", ["site000"])
    make_federation_pki(theirs, "localhost", ["site000"])
    cert_path, key_path, _ = CertLayout(ours).leaf_paths("collaborator", "site000")
    return CertLayout(ours).chain, CertLayout(theirs).chain, cert_path.read_bytes(), b"x", signer_for(load_private_key(key_path))(b"x")


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The chain files the verifier read, one entry a read."""
    done: list[object] = []
    real = signatures.read_pem_bytes

    def counting(path: object, *args: object) -> bytes:
        done.append(path)
        return real(path, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(signatures, "read_pem_bytes", counting)
    return done


def test_a_settled_chain_is_read_once_until_its_status_changes(pki, reads: list[object], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ours, _, cert, data, signature = pki
    chain = tmp_path / "chain.pem"
    chain.write_bytes(ours.read_bytes())
    os.utime(chain, ns=(1_000_000_000, 1_000_000_000))
    checking = CollaboratorVerifier(chain)
    checking.RACY_SECONDS = 0.0  # the change time (now) counts as settled at once
    assert all(checking("site000", cert, data, signature) for _ in range(3))
    assert len(reads) == 1
    os.utime(chain, ns=(2_000_000_000, 2_000_000_000))  # its status changed: read again, once
    assert all(checking("site000", cert, data, signature) for _ in range(3))
    assert len(reads) == 2


def test_an_in_place_rewrite_keeping_size_and_mtime_is_seen_by_its_change_time(pki, reads: list[object], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ours, theirs, cert, data, signature = pki
    ours_bytes, theirs_bytes = ours.read_bytes(), theirs.read_bytes()
    size = max(len(ours_bytes), len(theirs_bytes))
    chain = tmp_path / "chain.pem"
    chain.write_bytes(ours_bytes + b"\n" * (size - len(ours_bytes)))
    os.utime(chain, ns=(1_000_000_000, 1_000_000_000))
    checking = CollaboratorVerifier(chain)
    checking.RACY_SECONDS = 0.0
    assert checking("site000", cert, data, signature) and checking("site000", cert, data, signature)
    assert len(reads) == 1
    before = chain.stat()
    time.sleep(0.05)  # past the file system's timestamp granularity: the rewrite's change time differs
    with chain.open("r+b") as out:
        out.write(theirs_bytes + b"\n" * (size - len(theirs_bytes)))
    os.utime(chain, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = chain.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino, after.st_dev) == (before.st_size, before.st_mtime_ns, before.st_ino, before.st_dev)
    assert after.st_ctime_ns != before.st_ctime_ns
    assert not checking("site000", cert, data, signature)  # our CA's certificate, under the foreign CA
    assert len(reads) == 2


def test_a_chain_just_written_is_read_on_every_call(pki, reads: list[object], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ours, _, cert, data, signature = pki
    chain = tmp_path / "chain.pem"
    chain.write_bytes(ours.read_bytes())
    checking = CollaboratorVerifier(chain)
    assert checking.RACY_SECONDS == 2.0
    assert all(checking("site000", cert, data, signature) for _ in range(3))
    assert len(reads) == 3


def test_an_unchanged_status_stands_for_the_last_read_trust_seconds_at_most(pki, reads: list[object], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A backstop for file systems whose status can miss a change: past TRUST_SECONDS the
    chain is read again, its status unchanged or not."""
    ours, _, cert, data, signature = pki
    chain = tmp_path / "chain.pem"
    chain.write_bytes(ours.read_bytes())
    checking = CollaboratorVerifier(chain)
    checking.RACY_SECONDS, checking.TRUST_SECONDS = 0.0, 0.0
    assert all(checking("site000", cert, data, signature) for _ in range(3))
    assert len(reads) == 3


def test_a_late_read_of_an_old_chain_does_not_stand_for_a_new_status(pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """A call that read the old chain and stores it after another call read the rotated one
    leaves the old read paired with the old status: the next call reads the file again."""
    ours, theirs, cert, data, signature = pki
    chain = tmp_path / "chain.pem"
    chain.write_bytes(ours.read_bytes())
    os.utime(chain, ns=(1_000_000_000, 1_000_000_000))
    checking = CollaboratorVerifier(chain)
    checking.RACY_SECONDS = 0.0
    real = signatures.read_pem_bytes
    late: list[bool] = []

    def reading(path: object, *args: object) -> bytes:
        old = real(path, *args)  # type: ignore[arg-type]
        if not late:  # the first call stalls after its read: the chain is rotated, another call reads it
            late.append(True)
            chain.write_bytes(theirs.read_bytes())
            os.utime(chain, ns=(2_000_000_000, 2_000_000_000))
            assert not checking("site000", cert, data, signature)  # the rotated chain: another CA
        return old

    monkeypatch.setattr(signatures, "read_pem_bytes", reading)
    assert checking("site000", cert, data, signature)  # the stalled call judged under the chain it read
    assert not checking("site000", cert, data, signature)  # not the old chain's read standing for the new file


def test_the_common_reveals_are_checked_in_one_pass_as_one_by_one() -> None:
    """An honest survivor's bytes reveals take the array path, and it finds what the
    one-by-one check finds: the same owners, indices and shares."""
    federation, survivors, dropped = masked_round(5)
    server, site = federation.server, survivors[1]
    reveals = federation.sites[site].unmask(survivors, dropped)
    held = server._held[site]
    fast = server._common_reveals(site, reveals, held)
    assert fast is not None and fast == server._checked_reveals(site, reveals, held, "fix")
    owners, indices, shares = fast
    assert sorted(owners) == sorted(reveals) and indices == [held[owner][0] for owner in owners]
    assert [shares[at * SHARE_BYTES : (at + 1) * SHARE_BYTES] for at in range(len(owners))] == [decode_reveal(reveals[owner]).share for owner in owners]
    wrong = {**reveals, owners[0]: reveals[owners[0]][:-1] + bytes([reveals[owners[0]][-1] ^ 1])}
    assert server._common_reveals(site, wrong, held) is None  # a wrong share: left to the one-by-one check
