"""The byte formats of SecAgg+ messages, and SecAggRefused.

Every message starts with MAGIC (b"ASG") and a version byte, then a kind byte; fields are
fixed-size or length-prefixed (big-endian), bounded, and parsed strictly: anything else
(short, long, wrong kind, unknown version) is one SecAggRefused naming the message. Never pickle.

- advert (kind 1): c_pk (32 bytes, X25519, share encryption) | s_pk (32 bytes, X25519, masks).
- sealed share (kind 2): nonce (12) | b-commitment (32) | s-commitment (32) | AES-GCM
  ciphertext+tag of a share pair (34 + 16 bytes). The plaintext is index (u16, the receiver's
  Shamir x-coordinate) | b-share (16) | s-share (16); the associated data binds the version,
  round seed, sender, receiver and both commitments. Each commitment is the dealer's SHA-256 of
  one of the two shares, bound to round, dealer, holder, secret kind and index
  (crypto.commit_share): the aggregator checks every reveal against it, so a holder revealing
  a wrong share is caught and excluded (version 2 added them; version 1 had none). Version 3:
  the shares are elements of the prime field GF(2^128 - 159) (shamir.py, MPyC), where versions
  1 and 2 shared over GF(2^128); a share of another version rebuilds nothing, so it is refused.
- reveal (kind 3): secret kind (1 byte: 1 = self-mask seed b, 2 = mask-key seed s) | index (u16)
  | share (16).
- map (kind 4): a site-name -> message mapping (rosters, share bundles, reveals) for a transport
  that carries one blob: count (u32) | per entry: name length (u16) | UTF-8 name | value length
  (u32) | value. Names are unique and sorted.
- signed advert (kind 5): c_pk (32) | s_pk (32) | credential length (u16) | credential (the
  site's certificate, opaque here) | signature length (u16) | signature over advert_statement.
- confirmation (kind 6): signature length (u16) | signature over survivors_statement (the
  consistency check: a survivor's signature on the survivor and dropped lists it was sent and
  on the digest of the roster it was sent).
- indexed map (kind 7): a site-name -> message mapping over a sorted list of names both ends
  hold (the round's cohort), for the payloads that name O(n k) entries a round (shares,
  reveals): count (u32) | each entry's position in that list (u32, increasing) | each value's
  end offset among the values (u32, non-decreasing) | the values. Parsed in C-level steps
  (struct, map), not an entry at a time.
"""

from __future__ import annotations

import functools
import itertools
import operator
import struct
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, cast

import numpy as np

from accord.errors import RefusedError

MAGIC = b"ASG"
VERSION = 3
KIND_ADVERT = 1
KIND_SEALED_SHARE = 2
KIND_REVEAL = 3
KIND_MAP = 4
KIND_SIGNED_ADVERT = 5
KIND_CONFIRMATION = 6
KIND_INDEXED_MAP = 7

SECRET_SELF = 1
"""A reveal of a share of the self-mask seed b (asked for surviving sites)."""
SECRET_MASK_KEY = 2
"""A reveal of a share of the mask-key seed s (asked for dropped sites)."""

KEY_BYTES = 32
SHARE_BYTES = 16
NONCE_BYTES = 12
TAG_BYTES = 16
COMMIT_BYTES = 32
SHARE_PAIR_BYTES = 2 + 2 * SHARE_BYTES
ADVERT_BYTES = 5 + 2 * KEY_BYTES
SEALED_SHARE_BYTES = 5 + NONCE_BYTES + 2 * COMMIT_BYTES + SHARE_PAIR_BYTES + TAG_BYTES
REVEAL_BYTES = 5 + 1 + 2 + SHARE_BYTES
MAX_NAME_BYTES = 255
MAX_CREDENTIAL_BYTES = 8192
MAX_SIGNATURE_BYTES = 1024
MAX_MAP_ENTRIES = 1_000_000
_U16, _U32 = struct.Struct(">H"), struct.Struct(">I")


class SecAggRefused(RefusedError):
    """A SecAgg+ message or request is malformed, out of order or unsafe to answer.

    ``kind`` is ``"payload"`` for malformed or inconsistent messages and ``"state"`` for messages
    in the wrong phase (a RefusedError, so the transport maps it like any refusal).
    """


@dataclass(frozen=True)
class Advert:
    """A site's two X25519 public keys (raw 32-byte encodings)."""

    c_pk: bytes
    s_pk: bytes


@dataclass(frozen=True)
class SignedAdvert:
    """An advert with its signer's credential (certificate) and signature; both empty if unsigned."""

    advert: Advert
    credential: bytes = b""
    signature: bytes = b""


class Sealed(NamedTuple):
    """A sealed share pair as it travels: the AES-GCM nonce, the dealer's commitments to the
    b-share and the s-share (in the clear, bound by the ciphertext's associated data) and the
    ciphertext with its tag. (A NamedTuple, immutable like the dataclasses here, and made
    several times faster: a site parses the k shares routed to it.)"""

    nonce: bytes
    b_commit: bytes
    s_commit: bytes
    ciphertext: bytes



@dataclass(frozen=True)
class Reveal:
    """One share a surviving site reveals of another site's secret."""

    secret: int
    index: int
    share: bytes


def _header(kind: int) -> bytes:
    return MAGIC + bytes((VERSION, kind))


_HEADERS = {kind: _header(kind) for kind in range(KIND_ADVERT, KIND_INDEXED_MAP + 1)}
_SEALED_HEADER, _REVEAL_HEADER = _HEADERS[KIND_SEALED_SHARE], _HEADERS[KIND_REVEAL]
_SECRETS = (SECRET_SELF, SECRET_MASK_KEY)
_REVEAL_HEADER_ROW = np.frombuffer(_REVEAL_HEADER, dtype=np.uint8)
_COMMITS_AT = 5 + NONCE_BYTES  # where a sealed share's two commitments start


def _check_header(data: object, kind: int, size: int | None, what: str) -> bytes:
    if type(data) is bytes and data[:5] == _HEADERS[kind] and (size is None or len(data) == size):
        return data  # the common case, in one step; anything else gets the checks below and their message
    if not isinstance(data, bytes | bytearray | memoryview):
        raise SecAggRefused(f"{what} is a {type(data).__name__}, not bytes", "send the bytes the SecAgg session produced")
    data = bytes(data)
    if len(data) < 5 or data[:3] != MAGIC:
        raise SecAggRefused(f"{what} is not a SecAgg message (no {MAGIC!r} header)", "send the bytes the SecAgg session produced")
    if data[3] != VERSION:
        raise SecAggRefused(
            f"{what} has SecAgg format version {data[3]}; this side speaks version {VERSION}",
            "run the same Accord version at every site and the aggregator",
        )
    if data[4] != kind:
        raise SecAggRefused(f"{what} is a SecAgg message of kind {data[4]}, expected kind {kind}", "send the message this phase asks for")
    if size is not None and len(data) != size:
        raise SecAggRefused(f"{what} is {len(data)} bytes, expected exactly {size}", "send the bytes the SecAgg session produced")
    return data


def encode_advert(advert: Advert) -> bytes:
    """The advert message of ``advert``."""
    return _header(KIND_ADVERT) + advert.c_pk + advert.s_pk


def decode_advert(data: bytes, what: str = "advert") -> Advert:
    """Parse an advert message (SecAggRefused naming ``what`` if malformed)."""
    data = _check_header(data, KIND_ADVERT, ADVERT_BYTES, what)
    return Advert(data[5 : 5 + KEY_BYTES], data[5 + KEY_BYTES :])


def _field(data: bytes, at: int, limit: int, what: str, field: str) -> tuple[bytes, int]:
    """The u16-length-prefixed ``field`` at ``at`` (1 to ``limit`` bytes) and the offset after it."""
    if at + 2 > len(data):
        raise SecAggRefused(f"{what} is truncated before its {field}", "send the bytes the SecAgg session produced")
    (size,) = struct.unpack(">H", data[at : at + 2])
    if not 0 < size <= limit or at + 2 + size > len(data):
        raise SecAggRefused(f"{what} has a {field} of {size} bytes, empty, over {limit} or truncated", "send the bytes the SecAgg session produced")
    return data[at + 2 : at + 2 + size], at + 2 + size


def encode_signed_advert(signed: SignedAdvert) -> bytes:
    """The signed-advert message of ``signed`` (its credential and signature must be non-empty)."""
    advert = signed.advert
    parts = [_header(KIND_SIGNED_ADVERT), advert.c_pk, advert.s_pk]
    for field in (signed.credential, signed.signature):
        parts += [struct.pack(">H", len(field)), field]
    return b"".join(parts)


def read_advert(data: bytes, what: str = "advert") -> SignedAdvert:
    """Parse a plain (kind 1, credential and signature empty) or signed (kind 5) advert."""
    kind = data[4] if isinstance(data, bytes | bytearray) and len(data) >= 5 else KIND_ADVERT
    if kind != KIND_SIGNED_ADVERT:
        return SignedAdvert(decode_advert(data, what))
    data = _check_header(data, KIND_SIGNED_ADVERT, None, what)
    if len(data) < ADVERT_BYTES:
        raise SecAggRefused(f"{what} is truncated before its keys", "send the bytes the SecAgg session produced")
    credential, at = _field(data, ADVERT_BYTES, MAX_CREDENTIAL_BYTES, what, "credential")
    signature, at = _field(data, at, MAX_SIGNATURE_BYTES, what, "signature")
    if at != len(data):
        raise SecAggRefused(f"{what} has {len(data) - at} bytes after its signature", "send the bytes the SecAgg session produced")
    return SignedAdvert(Advert(data[5 : 5 + KEY_BYTES], data[5 + KEY_BYTES : ADVERT_BYTES]), credential, signature)


def encode_confirmation(signature: bytes) -> bytes:
    """A confirmation message: a survivor's signature on the survivor list."""
    return _header(KIND_CONFIRMATION) + struct.pack(">H", len(signature)) + signature


def decode_confirmation(data: bytes, what: str = "confirmation") -> bytes:
    """The signature a confirmation message carries (SecAggRefused naming ``what`` if malformed)."""
    data = _check_header(data, KIND_CONFIRMATION, None, what)
    signature, at = _field(data, 5, MAX_SIGNATURE_BYTES, what, "signature")
    if at != len(data):
        raise SecAggRefused(f"{what} has {len(data) - at} bytes after its signature", "send the bytes the SecAgg session produced")
    return signature


def encode_sealed(sealed: Sealed) -> bytes:
    """A sealed-share message: nonce, the two commitments, ciphertext (with tag)."""
    return _header(KIND_SEALED_SHARE) + sealed.nonce + sealed.b_commit + sealed.s_commit + sealed.ciphertext


def decode_sealed(data: bytes, what: str = "sealed share") -> Sealed:
    """Parse a sealed-share message (SecAggRefused naming ``what`` if malformed)."""
    data = _check_header(data, KIND_SEALED_SHARE, SEALED_SHARE_BYTES, what)
    at = 5 + NONCE_BYTES
    return Sealed(data[5:at], data[at : at + COMMIT_BYTES], data[at + COMMIT_BYTES : at + 2 * COMMIT_BYTES], data[at + 2 * COMMIT_BYTES :])


def is_sealed(data: object) -> bool:
    """Whether ``data`` is bytes of a sealed share's size and header: the aggregator's one-step
    check of the O(n k) shares it routes unparsed (anything else: decode_sealed refuses it,
    naming what is wrong, or parses a bytes-like)."""
    return type(data) is bytes and len(data) == SEALED_SHARE_BYTES and data[:5] == _SEALED_HEADER


def all_sealed(values: Collection[object]) -> bool:
    """Whether every one of ``values`` passes is_sealed (and there is one at least): the
    aggregator's check of one site's O(k) shares in a few C-level steps."""
    if set(map(type, values)) != {bytes} or set(map(len, cast("Collection[bytes]", values))) != {SEALED_SHARE_BYTES}:
        return False
    joined = b"".join(cast("Collection[bytes]", values))  # the header's i-th byte is every SEALED_SHARE_BYTES-th from i
    return all(joined[at::SEALED_SHARE_BYTES] == _SEALED_HEADER[at : at + 1] * len(values) for at in range(len(_SEALED_HEADER)))


def sealed_commitment(sealed: bytes, secret: int) -> bytes:
    """The commitment a well-formed sealed-share message carries to its share of ``secret``
    (SECRET_SELF: b, SECRET_MASK_KEY: s)."""
    at = _COMMITS_AT if secret == SECRET_SELF else _COMMITS_AT + COMMIT_BYTES
    return sealed[at : at + COMMIT_BYTES]


def encode_share_pair(index: int, b_share: bytes, s_share: bytes) -> bytes:
    """The plaintext of a sealed share: index | b-share | s-share."""
    return struct.pack(">H", index) + b_share + s_share


def decode_share_pair(data: bytes) -> tuple[int, bytes, bytes]:
    """(index, b-share, s-share) of a decrypted share pair (its length is fixed by AES-GCM's check)."""
    (index,) = struct.unpack(">H", data[:2])
    return index, data[2 : 2 + SHARE_BYTES], data[2 + SHARE_BYTES :]


def encode_reveal(reveal: Reveal) -> bytes:
    """A reveal message."""
    return _header(KIND_REVEAL) + bytes((reveal.secret,)) + struct.pack(">H", reveal.index) + reveal.share


def decode_reveal(data: bytes, what: str = "reveal") -> Reveal:
    """Parse a reveal message (SecAggRefused naming ``what`` if malformed)."""
    data = _check_header(data, KIND_REVEAL, REVEAL_BYTES, what)
    secret = data[5]
    if secret not in (SECRET_SELF, SECRET_MASK_KEY):
        raise SecAggRefused(f"{what} reveals secret kind {secret}, expected 1 (self mask) or 2 (mask key)", "send the reveal the site produced")
    (index,) = _U16.unpack_from(data, 6)
    if index == 0:
        raise SecAggRefused(f"{what} has share index 0 (Shamir indices start at 1)", "send the reveal the site produced")
    return Reveal(secret, index, data[8:])


def reveal_body(data: object) -> bytes | None:
    """A well-formed reveal message's body, secret kind (1 byte) | index (u16) | share: the tail
    of its commitment's input (crypto.commit_tail). None for anything that is not bytes of that
    common shape: decode_reveal then refuses it, naming what is wrong, or parses a bytes-like."""
    if type(data) is bytes and len(data) == REVEAL_BYTES and data[:5] == _REVEAL_HEADER and data[5] in _SECRETS and (data[6] or data[7]):
        return data[5:]
    return None


def joined_reveals(reveals: Sequence[object], selfs: Sequence[bool], indices: Sequence[int]) -> bytes | None:
    """The reveal messages ``reveals`` joined, when every one is bytes of the common shape
    (reveal_body's), of the secret kind its ``selfs`` flag names (True: SECRET_SELF, False:
    SECRET_MASK_KEY) and at its index in ``indices`` (each >= 1); None otherwise (then each is
    judged alone: reveal_body, decode_reveal). The aggregator's check of a survivor's O(k)
    reveals in a few array steps."""
    if set(map(type, reveals)) != {bytes}:
        return None
    messages = cast("Sequence[bytes]", reveals)  # every one is bytes (checked above)
    if set(map(len, messages)) != {REVEAL_BYTES}:
        return None
    joined = b"".join(messages)
    rows = np.frombuffer(joined, dtype=np.uint8).reshape(-1, REVEAL_BYTES)
    kinds = np.where(np.fromiter(selfs, dtype=bool, count=len(rows)), SECRET_SELF, SECRET_MASK_KEY)
    index = rows[:, 6].astype(np.int64) << 8 | rows[:, 7]
    wanted = np.fromiter(indices, dtype=np.int64, count=len(rows))
    if not ((rows[:, :5] == _REVEAL_HEADER_ROW).all() and np.array_equal(rows[:, 5], kinds) and np.array_equal(index, wanted)):
        return None
    return joined


def revealed_shares(joined: bytes) -> bytes:
    """The shares of ``joined`` reveal messages (joined_reveals), joined: SHARE_BYTES each, in order."""
    return np.frombuffer(joined, dtype=np.uint8).reshape(-1, REVEAL_BYTES)[:, REVEAL_BYTES - SHARE_BYTES :].tobytes()


def sealed_commitments(sealed: Sequence[bytes], selfs: Sequence[bool]) -> bytes:
    """sealed_commitment of each well-formed sealed share in ``sealed``, joined: to its b-share
    where its ``selfs`` flag is True, else to its s-share."""
    b_at, s_at = _COMMITS_AT, _COMMITS_AT + COMMIT_BYTES
    return b"".join([box[b_at : b_at + COMMIT_BYTES] if own else box[s_at : s_at + COMMIT_BYTES] for box, own in zip(sealed, selfs)])


@functools.lru_cache(maxsize=1 << 16)
def _map_name(name: str) -> bytes:
    """A map entry's name field: its UTF-8 length (u16) and bytes (kept: maps name the same sites)."""
    raw = name.encode("utf-8")
    if not raw or len(raw) > MAX_NAME_BYTES:
        raise SecAggRefused(f"site name {name!r} is empty or longer than {MAX_NAME_BYTES} bytes", "use the collaborator names of the plan")
    return _U16.pack(len(raw)) + raw


def encode_map(entries: Mapping[str, bytes]) -> bytes:
    """One blob for a site-name -> bytes mapping (sorted by name)."""
    parts = [_HEADERS[KIND_MAP], _U32.pack(len(entries))]
    for name in sorted(entries):
        value = entries[name]
        if type(value) is not bytes:
            value = bytes(value)
        parts += (_map_name(name), _U32.pack(len(value)), value)
    return b"".join(parts)


def decode_map(data: bytes, what: str = "SecAgg map", *, max_entries: int = MAX_MAP_ENTRIES, max_value: int = 1 << 20) -> dict[str, bytes]:
    """Parse a map blob: at most ``max_entries`` entries of at most ``max_value`` bytes each,
    names unique and sorted; SecAggRefused naming ``what`` on anything else."""
    data = _check_header(data, KIND_MAP, None, what)
    fix = "send the map encode_map produced"
    if len(data) < 9:
        raise SecAggRefused(f"{what} is truncated (no entry count)", fix)
    (count,) = _U32.unpack_from(data, 5)
    if count > max_entries:
        raise SecAggRefused(f"{what} has {count} entries, more than the {max_entries} allowed", fix)
    out: dict[str, bytes] = {}
    at, previous, size = 9, None, len(data)
    for _ in range(count):
        if at + 2 > size:
            raise SecAggRefused(f"{what} is truncated", fix)
        (name_len,) = _U16.unpack_from(data, at)
        at += 2
        if not 0 < name_len <= MAX_NAME_BYTES or at + name_len + 4 > size:
            raise SecAggRefused(f"{what} has a bad or truncated site name", fix)
        try:
            name = data[at : at + name_len].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SecAggRefused(f"{what} has a site name that is not UTF-8", fix) from exc
        (value_len,) = _U32.unpack_from(data, at + name_len)
        at += name_len + 4
        if value_len > max_value or at + value_len > size:
            raise SecAggRefused(f"{what} has an entry for {name!r} of {value_len} bytes, too long or truncated", fix)
        if previous is not None and name <= previous:
            raise SecAggRefused(f"{what} has its names out of order or repeated at {name!r}", fix)
        out[name], previous = data[at : at + value_len], name
        at += value_len
    if at != size:
        raise SecAggRefused(f"{what} has {size - at} bytes after its last entry", fix)
    return out


def encode_indexed(entries: Mapping[str, bytes], names: Sequence[str]) -> bytes:
    """The indexed map of ``entries`` over ``names`` (sorted, unique: the round's cohort); every
    entry's name must be one of them (ValueError otherwise: a caller's bug, not the peer's)."""
    position = {name: at for at, name in enumerate(names)}
    try:
        order = sorted((position[name], name) for name in entries)
    except KeyError as exc:
        raise ValueError(f"indexed map entry {exc.args[0]!r} is not among the {len(names)} names") from None
    values = [entries[name] if type(entries[name]) is bytes else bytes(entries[name]) for _, name in order]
    ends = list(itertools.accumulate(map(len, values)))
    if ends and ends[-1] >= 1 << 32:
        raise ValueError("an indexed map's values must total under 4 GiB")
    count = len(order)
    return b"".join((_HEADERS[KIND_INDEXED_MAP], struct.pack(f">{1 + 2 * count}I", count, *(at for at, _ in order), *ends), *values))


def decode_indexed(data: bytes, names: Sequence[str], what: str = "SecAgg indexed map", *, max_value: int = 1 << 20) -> dict[str, bytes]:
    """Parse an indexed map over ``names`` (the list it was encoded over): positions increasing
    and inside the list, each value at most ``max_value`` bytes, nothing after the last;
    SecAggRefused naming ``what`` on anything else. O(entries) in C-level steps (struct, map)."""
    fix = "send the map encode_indexed produced over the round's cohort"
    if type(data) is bytes and data[:5] == _HEADERS[KIND_MAP]:
        raise SecAggRefused(
            f"{what} is a per-entry SecAgg map (kind {KIND_MAP}), which Accord sent before these payloads became indexed maps",
            "run the same Accord version at every site and the aggregator",
        )
    data = _check_header(data, KIND_INDEXED_MAP, None, what)
    if len(data) < 9:
        raise SecAggRefused(f"{what} is truncated (no entry count)", fix)
    (count,) = _U32.unpack_from(data, 5)
    start = 9 + 8 * count
    if count > len(names):
        raise SecAggRefused(f"{what} has {count} entries, more than the {len(names)} names it indexes", fix)
    if start > len(data):
        raise SecAggRefused(f"{what} is truncated: {len(data)} bytes, fewer than the {start} its {count} entries' positions and offsets take", fix)
    fields = struct.unpack_from(f">{2 * count}I", data, 9)
    at, ends = fields[:count], fields[count:]
    if count and (at[-1] >= len(names) or not all(map(operator.lt, at, at[1:]))):
        raise SecAggRefused(f"{what} has positions out of order, repeated or past its {len(names)} names", fix)
    begins = (0, *ends[:-1])
    if count and (not all(map(operator.le, begins, ends)) or max(map(operator.sub, ends, begins)) > max_value):
        raise SecAggRefused(f"{what} has a value of a negative length or over {max_value} bytes", fix)
    if start + (ends[-1] if count else 0) != len(data):
        raise SecAggRefused(f"{what} has {len(data) - start} bytes of values, not the {ends[-1] if count else 0} its offsets say", fix)
    body = data[start:]
    return dict(zip([names[i] for i in at], [body[a:b] for a, b in zip(begins, ends)], strict=True))
