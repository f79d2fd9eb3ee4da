"""The SecAgg+ primitives, all from libraries: X25519, HKDF-SHA256, AES-GCM, AES-CTR
(``cryptography``) and SHA-256 share commitments (hashlib); Shamir secret sharing is
shamir.py's (MPyC). Nothing hand-rolled.

Every derived key is bound to the round seed (HKDF salt) and to the names of the sites it
serves (HKDF info), so a key, a share or a mask of one round or pair is useless for another.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
import struct
from collections.abc import Sequence

import numpy as np

from accord.errors import AccordError
from accord.secagg.messages import KEY_BYTES, SecAggRefused

try:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise AccordError(
        f"secure aggregation needs cryptography ({exc})",
        "pip install 'accord[secagg]'",
    ) from exc



@functools.lru_cache(maxsize=1 << 16)
def _name_field(name: str) -> bytes:
    """``name`` in UTF-8 with its 2-byte length before it (kept: a round asks for each name often)."""
    raw = name.encode("utf-8")
    return len(raw).to_bytes(2, "big") + raw


def label(purpose: str, *names: str) -> bytes:
    """HKDF info: the purpose and the site names, each length-prefixed (no two lists collide)."""
    return b"".join([b"accord-secagg/1/", purpose.encode(), *map(_name_field, names)])


def derive_key(material: bytes, round_seed: bytes, info: bytes, length: int = KEY_BYTES) -> bytes:
    """HKDF-SHA256 of ``material``, salted with the round seed."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=round_seed, info=info).derive(material)


class Drawer:
    """Random bytes: from the OS's entropy, or (tests only) derived deterministically from a seed."""

    def __init__(self, seed: bytes | None) -> None:
        self._seed = seed
        self._count = 0

    def draw(self, n: int) -> bytes:
        """``n`` fresh random bytes."""
        if self._seed is None:
            return secrets.token_bytes(n)
        self._count += 1
        return derive_key(self._seed, b"", label(f"draw/{self._count}"), n)


def mask_key_from_seed(s_seed: bytes) -> X25519PrivateKey:
    """The X25519 mask key a site derives from its 16-byte seed s (the seed is what is shared)."""
    return X25519PrivateKey.from_private_bytes(derive_key(s_seed, b"", label("mask-key")))


def public_bytes(key: X25519PrivateKey) -> bytes:
    """The raw 32-byte public key of ``key``."""
    return key.public_key().public_bytes_raw()


def agree(private: X25519PrivateKey, peer_public: bytes, what: str) -> bytes:
    """X25519(private, peer_public); SecAggRefused naming ``what`` for a low-order public key."""
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:
        raise SecAggRefused(f"{what} is not a usable X25519 public key ({exc})", "the site must advertise the keys its session made") from exc


def seal_share(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """AES-256-GCM encryption of a share pair (ciphertext with its tag)."""
    return AESGCM(key).encrypt(nonce, plaintext, aad)


def open_share(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes, what: str) -> bytes:
    """AES-256-GCM decryption; SecAggRefused naming ``what`` when it does not check out."""
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, aad)
    except InvalidTag as exc:
        raise SecAggRefused(
            f"{what} does not decrypt: tampered, or sealed for another round, sender or receiver",
            "the aggregator must forward each site's sealed shares unchanged to the site they name",
        ) from exc


_U16, _KIND_INDEX = struct.Struct(">H"), struct.Struct(">BH")
_COMMIT_LABEL = label("share-commit")

#: ring elements a Masker expands at a time (1 MiB of keystream), into buffers it reuses
CHUNK = 1 << 17


class Masker:
    """Masks added to or taken from a ring vector, or a slice of one, in place: each the
    AES-256-CTR keystream under its key, read as uint64 ring elements. The keystream is made
    ``CHUNK`` elements at a time into one buffer made once (``update_into``), so a mask
    allocates nothing and the buffers are O(chunk) whatever the vector's length. Each key
    serves one mask (it is derived per round, pair or site), so the zero IV is safe."""

    def __init__(self, length: int) -> None:
        self._chunk = max(1, min(length, CHUNK))
        self._zeros = memoryview(bytes(8 * self._chunk))
        self._out = bytearray(8 * self._chunk + 15)  # update_into wants room for a block beyond the data
        self._stream = np.frombuffer(self._out, dtype="<u8", count=self._chunk)

    def add(self, vector: np.ndarray, key: bytes, sign: int = 1, start: int = 0) -> None:
        """``vector`` += elements ``start`` to ``start + len(vector)`` of the mask under ``key``
        (``sign`` -1: -=), modulo 2^64, in place."""
        # CTR's counter block is the IV plus the block index as one 128-bit big-endian integer
        # (OpenSSL's; tests/test_mask_pool.py checks it): with the zero IV, block start // 2
        encryptor = Cipher(algorithms.AES(key), modes.CTR((start // 2).to_bytes(16, "big"))).encryptor()
        if start % 2:
            encryptor.update(bytes(8))  # the block's first element is before the slice
        for at in range(0, len(vector), self._chunk):
            count = min(self._chunk, len(vector) - at)
            encryptor.update_into(self._zeros[: 8 * count], self._out)
            part = vector[at : at + count]
            if sign > 0:
                part += self._stream[:count]
            else:
                part -= self._stream[:count]


def share_key(c_sk: X25519PrivateKey, peer_c_pk: bytes, site: str, peer: str, round_seed: bytes) -> bytes:
    """The AES-GCM key between ``site`` and ``peer`` for this round (the same at both ends)."""
    low, high = sorted((site, peer))
    return derive_key(agree(c_sk, peer_c_pk, f"the share key of {peer!r}"), round_seed, label("share", low, high))


def share_aad(round_seed: bytes, sender: str, receiver: str, commitments: bytes) -> bytes:
    """The associated data binding a sealed share to its round, sender, receiver and the
    sender's ``commitments`` to the two shares (so the receiver knows they are the sender's)."""
    return round_seed + label("share-aad", sender, receiver) + commitments


def commit_share(round_seed: bytes, dealer: str, holder: str, secret: int, index: int, share: bytes) -> bytes:
    """The dealer's commitment to the share of ``secret`` (a SECRET_* kind) at ``index`` that
    ``holder`` holds: SHA-256 over the purpose, both names, the round seed, kind, index and share.

    Binding: a holder cannot find another share with the same commitment. Hiding: each share is
    a uniformly random 128-bit field element, so finding it from the digest is a 2^128 search."""
    return commit_tail(commit_prefix(round_seed, dealer, holder), _KIND_INDEX.pack(secret, index) + share)


def commit_prefix(round_seed: bytes, dealer: str, holder: str) -> bytes:
    """The part of commit_share's input fixed by the round, dealer and holder:
    ``commit_dealer(dealer) + commit_holder(round_seed, holder)``."""
    return commit_dealer(dealer) + commit_holder(round_seed, holder)


def commit_dealer(dealer: str) -> bytes:
    """commit_prefix's start: label("share-commit", dealer) without the holder's name."""
    return _COMMIT_LABEL + _name_field(dealer)


def commit_holder(round_seed: bytes, holder: str) -> bytes:
    """commit_prefix's end: the holder's name field, then the round seed with its 2-byte length."""
    return b"".join((_name_field(holder), _U16.pack(len(round_seed)), round_seed))


def commit_tail(prefix: bytes, tail: bytes) -> bytes:
    """commit_share from its ``prefix`` (commit_prefix) and ``tail``: the secret kind (1 byte),
    index (u16) and share, which is a reveal message's body as it travels (messages.py)."""
    return hashlib.sha256(prefix + tail).digest()


def commit_reveals(dealers: Sequence[bytes], holder: bytes, messages: bytes, size: int, skip: int) -> bytes:
    """The commitments, joined, to the shares one holder reveals in ``messages``: the i-th
    message is ``messages[i * size : (i + 1) * size]``, its body (commit_tail's tail) what
    follows its first ``skip`` bytes, its dealer's part ``dealers[i]`` (commit_dealer) and
    ``holder`` commit_holder's. The same digests as commit_tail, in one pass."""
    sha256, body = hashlib.sha256, size - skip
    return b"".join([sha256(dealer + holder + messages[at : at + body]).digest() for dealer, at in zip(dealers, range(skip, len(messages), size))])


def self_mask_key(b: bytes, site: str, round_seed: bytes) -> bytes:
    """The key of the self mask PRG(b) of ``site``."""
    return derive_key(b, round_seed, label("self", site))


def pair_mask_key(s_sk: X25519PrivateKey, peer_s_pk: bytes, site: str, peer: str, round_seed: bytes) -> bytes:
    """The key of the pairwise mask of ``site`` and ``peer`` (the same at both ends).

    The site whose name sorts first adds the mask, the other subtracts it, so it cancels in the sum.
    """
    low, high = sorted((site, peer))
    shared = agree(s_sk, peer_s_pk, f"the mask key of {peer!r}")
    return derive_key(shared, round_seed, label("pair", low, high))


#: a dropped site's pairwise mask the aggregator takes out: (the dropped owner's rebuilt mask-key
#: seed, its name, a surviving neighbour's s_pk, that neighbour's name)
DroppedPair = tuple[bytes, str, bytes, str]

#: a mask to expand: its AES-256 key and its sign (1: added, -1: subtracted)
MaskKey = tuple[bytes, int]


def pair_keys(round_seed: bytes, pairs: Sequence[DroppedPair]) -> list[MaskKey]:
    """The keys of ``pairs``' masks (X25519 and HKDF), each signed as its surviving neighbour
    added it (+ if the neighbour's name sorts first)."""
    owners: dict[bytes, X25519PrivateKey] = {}
    keys: list[MaskKey] = []
    for seed, owner, peer_pk, peer in pairs:
        s_sk = owners.get(seed)
        if s_sk is None:
            s_sk = owners[seed] = mask_key_from_seed(seed)
        keys.append((pair_mask_key(s_sk, peer_pk, owner, peer, round_seed), 1 if peer < owner else -1))
    return keys


def sum_masks(keys: Sequence[MaskKey], start: int, stop: int) -> np.ndarray:
    """Ring elements ``start`` to ``stop`` of the signed sum of the masks under ``keys``
    (memory: the slice and one Masker's chunk)."""
    total = np.zeros(stop - start, dtype=np.uint64)
    masker = Masker(stop - start)
    for key, sign in keys:
        masker.add(total, key, sign, start)
    return total


def mask_total(round_seed: bytes, length: int, self_keys: Sequence[bytes], pairs: Sequence[DroppedPair]) -> np.ndarray:
    """What the unmasking subtracts from the masked sum (``length`` ring elements): each
    survivor's self mask (under its key in ``self_keys``) and each dropped owner's pairwise mask
    with each surviving neighbour, as that neighbour added it."""
    return sum_masks([(key, 1) for key in self_keys] + pair_keys(round_seed, pairs), 0, length)
