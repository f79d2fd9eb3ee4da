"""Whether some bytes are, or hold, a private key: one detector for export, import and packages.

Detected: any PEM block whose label has ``PRIVATE KEY`` in it (PKCS#8, encrypted PKCS#8,
traditional RSA/EC/DSA, OpenSSH), a PuTTY key file, a DER private key (PKCS#8 plain or
encrypted, traditional RSA/EC), found by trying ``cryptography``'s DER loaders on small
files that start like an ASN.1 SEQUENCE, and any of these inside a nested zip, tar or gzip
archive (a few levels deep, bounded in size). A nested archive too large or too deep to
look into counts as one that may hold a key.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import zipfile

PEM_MARKER = b"PRIVATE KEY-----"
PUTTY_MARKER = b"PuTTY-User-Key-File-"
#: DER keys are small: RSA-8192 PKCS#8 is under 5 KiB
MAX_DER_BYTES = 16 * 1024
MAX_DEPTH = 3
#: the most bytes read out of nested archives, all of one file's nesting together
MAX_NESTED_BYTES = 64 * 1024 * 1024


class _Budget:
    """Bytes still allowed out of nested archives."""

    def __init__(self) -> None:
        self.left = MAX_NESTED_BYTES

    def take(self, size: int) -> bool:
        self.left -= size
        return self.left >= 0


def _der_private_key(data: bytes) -> bool:
    if not (0 < len(data) <= MAX_DER_BYTES and data[0] == 0x30):
        return False
    from cryptography.hazmat.primitives import serialization

    try:
        serialization.load_der_private_key(data, password=None)
    except TypeError:  # an encrypted key that needs a password: a key all the same
        return True
    except Exception:  # not a key (ValueError), or an algorithm this build lacks
        return False
    return True


def _members(data: bytes, budget: _Budget) -> list[tuple[str, bytes]] | None:
    """The files inside ``data`` if it is a zip, tar or gzip archive; [] if it is not one.

    None: it is an archive too large to look into within the budget.
    """
    stream = io.BytesIO(data)
    if data[:4] == b"PK\x03\x04" and zipfile.is_zipfile(stream):
        found = []
        try:
            with zipfile.ZipFile(stream) as zf:
                for info in zf.infolist():
                    if info.is_dir():
                        continue
                    if not budget.take(info.file_size):
                        return None
                    with zf.open(info) as handle:
                        found.append((info.filename, handle.read(info.file_size + 1)))
        except (zipfile.BadZipFile, RuntimeError, NotImplementedError, EOFError, ValueError):
            return None  # damaged or encrypted: it cannot be checked
        return found
    if data[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=stream) as handle:
                inner = handle.read(budget.left + 1)
        except (OSError, EOFError):
            return None
        return [("(gzip content)", inner)] if budget.take(len(inner)) else None
    if len(data) > 262 and data[257:262] == b"ustar":
        found = []
        try:
            with tarfile.open(fileobj=stream, mode="r:") as tf:
                for member in tf.getmembers():
                    if not member.isfile():
                        continue
                    if not budget.take(member.size):
                        return None
                    extracted = tf.extractfile(member)
                    found.append((member.name, extracted.read() if extracted else b""))
        except (tarfile.TarError, EOFError):
            return None
        return found
    return []


def _why(data: bytes, depth: int, budget: _Budget) -> str | None:
    if PEM_MARKER in data or PUTTY_MARKER in data:
        return "holds a private key (PEM)"
    if _der_private_key(data):
        return "is a private key (DER)"
    members = _members(data, budget)
    if members is None or (members and depth >= MAX_DEPTH):
        return "is an archive too large, deep or damaged to check for private keys"
    for name, inner in members:
        why = _why(inner, depth + 1, budget)
        if why:
            return f"{why}, in its member {name[:100]!r}"
    return None


def private_key_problem(data: bytes) -> str | None:
    """Why ``data`` is or holds a private key (or may: an archive that cannot be checked), or None.

    The answer reads after "it": "holds a private key (PEM), in its member 'keys/a.pem'".
    """
    return _why(data, 0, _Budget())
