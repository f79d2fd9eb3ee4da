"""Whether some bytes are, or hold, a private key: one detector for export, import and packages.

Detected: any PEM block whose label has ``PRIVATE KEY`` in it (PKCS#8, encrypted PKCS#8,
traditional RSA/EC/DSA, OpenSSH), a PuTTY key file, a JWK private key (a JSON object with
``"kty"`` and a ``"d"`` member), a DER private key (PKCS#8 plain or encrypted, traditional
RSA/EC/DSA) anywhere in the bytes (found by the DER headers these keys start with, then
tried with ``cryptography``'s loader), a PKCS#12 bundle holding a key or needing a password
(tried with ``cryptography``'s PKCS#12 loader), any of these DER forms encoded in base64
(runs of at least 100 base64 characters, line breaks allowed, tried decoded), and any of
these inside a nested zip, tar or gzip archive (a few levels deep, bounded in size). A
nested archive too large or too deep to look into counts as one that may hold a key.

The work per file is bounded: at most MAX_DER_TRIES key candidates and MAX_BASE64_RUNS
base64 runs (each decoded up to MAX_BASE64_CHARS) are tried. Not detected: a key split into
short quoted pieces (``"MIIE" "vQIB..."``), compressed other than by zip/gzip, or encrypted
by the workspace's own code; the operator's review of ``src/`` stays the last check.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import io
import re
import tarfile
import zipfile

PEM_MARKER = b"PRIVATE KEY-----"
PUTTY_MARKER = b"PuTTY-User-Key-File-"
#: DER keys are small: RSA-8192 PKCS#8 is under 5 KiB
MAX_DER_BYTES = 16 * 1024
#: PKCS#12 bundles carry certificates too, but a key's bundle is rarely past this
MAX_PKCS12_BYTES = 256 * 1024
MAX_DER_TRIES = 64
MAX_BASE64_RUNS = 256
MAX_BASE64_CHARS = 4 * MAX_PKCS12_BYTES // 3 + 4
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


# "kty" and a string "d" in one JSON object (no braces between them), either order.
_JWK = re.compile(
    rb"""["']kty["']\s*:[^{}]{0,4096}?["']d["']\s*:\s*["']|["']d["']\s*:\s*["'][^{}]{0,4096}?["']kty["']\s*:"""
)
# A DER SEQUENCE header, then how a private key's body starts: version 0 or 1 and an
# AlgorithmIdentifier, an INTEGER or an OCTET STRING (PKCS#8, RSA/DSA, EC), or an encrypted
# PKCS#8's AlgorithmIdentifier naming PBES2 or a PKCS#12 PBE scheme.
_DER_KEY_START = re.compile(
    rb"\x30(?:[\x01-\x7f]|\x81.|\x82..)(?:\x02\x01[\x00\x01][\x30\x02\x04]"
    rb"|\x30(?:[\x01-\x7f]|\x81.|\x82..)\x06(?:\x09\x2a\x86\x48\x86\xf7\x0d\x01\x05\x0d"
    rb"|\x0a\x2a\x86\x48\x86\xf7\x0d\x01\x0c\x01))",
    re.S,
)
_PKCS12_START = re.compile(rb"\x30(?:\x81.|\x82..|\x83...)\x02\x01\x03\x30", re.S)
_BASE64_RUN = re.compile(rb"[A-Za-z0-9+/_\-\r\n]{100,}={0,2}")


def _der_length(data: bytes, start: int) -> int | None:
    """The total length of the DER element at ``start`` (a definite length), or None."""
    first = data[start + 1]
    if first < 0x80:
        return 2 + first
    count = first & 0x7F
    if not 1 <= count <= 3 or start + 2 + count > len(data):
        return None
    return 2 + count + int.from_bytes(data[start + 2 : start + 2 + count], "big")


def _is_der_private_key(data: bytes) -> bool:
    from cryptography.hazmat.primitives import serialization

    try:
        serialization.load_der_private_key(data, password=None)
    except TypeError:  # an encrypted key that needs a password: a key all the same
        return True
    except Exception:  # not a key (ValueError), or an algorithm this build lacks
        return False
    return True


def _embedded_der_key(data: bytes) -> bool:
    """A DER private key is somewhere in ``data`` (at most MAX_DER_TRIES candidates tried)."""
    for tries, match in enumerate(_DER_KEY_START.finditer(data)):
        if tries >= MAX_DER_TRIES:
            break
        start = match.start()
        end = start + (_der_length(data, start) or MAX_DER_BYTES + 1)
        if end - start <= MAX_DER_BYTES and end <= len(data) and _is_der_private_key(data[start:end]):
            return True
    return False


def _pkcs12_key(data: bytes) -> str | None:
    """Why ``data`` (a PKCS#12 bundle at its start) holds or may hold a key, or None."""
    if not (len(data) <= MAX_PKCS12_BYTES and _PKCS12_START.match(data)):
        return None
    from cryptography.hazmat.primitives.serialization import pkcs12

    try:
        key, _, _ = pkcs12.load_key_and_certificates(data, password=None)
    except ValueError:  # a password is needed (or it is damaged): it may hold a key
        return "is a PKCS#12 bundle that needs a password (it may hold a private key)"
    except Exception:  # an algorithm this build lacks
        return "is a PKCS#12 bundle that cannot be checked for a private key"
    return "is a PKCS#12 bundle holding a private key" if key is not None else None


def _binary_key(data: bytes) -> str | None:
    """Why ``data`` is a DER private key or a PKCS#12 bundle with one, or None."""
    if 0 < len(data) <= MAX_DER_BYTES and data[0] == 0x30 and _is_der_private_key(data):
        return "is a private key (DER)"
    return _pkcs12_key(data)


def _holds_binary_key(data: bytes) -> str | None:
    """Why ``data`` is, or has somewhere in its bytes, a DER or PKCS#12 private key, or None."""
    return _binary_key(data) or ("holds a private key (DER)" if _embedded_der_key(data) else None)


def _base64_key(data: bytes) -> str | None:
    """Why a base64 run in ``data`` decodes to a DER or PKCS#12 private key, or None."""
    for runs, match in enumerate(_BASE64_RUN.finditer(data)):
        if runs >= MAX_BASE64_RUNS:
            break
        text = re.sub(rb"[\r\n]", b"", match.group()[:MAX_BASE64_CHARS])
        text = text[: len(text) - len(text) % 4] if b"=" not in text else text
        for alphabet in (b"+/", b"-_"):
            try:
                decoded = base64.b64decode(text, altchars=alphabet, validate=True)
            except (binascii.Error, ValueError):
                continue
            why = _holds_binary_key(decoded)
            if why:
                return f"holds a base64 text that {why}"
    return None


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
    if _JWK.search(data):
        return "holds a private key (JWK)"
    why = _binary_key(data)
    if why:
        return why
    members = _members(data, budget)
    if members is None or (members and depth >= MAX_DEPTH):
        return "is an archive too large, deep or damaged to check for private keys"
    for name, inner in members:
        why = _why(inner, depth + 1, budget)
        if why:
            return f"{why}, in its member {name[:100]!r}"
    return _holds_binary_key(data) or _base64_key(data)


def private_key_problem(data: bytes) -> str | None:
    """Why ``data`` is or holds a private key (or may: an archive that cannot be checked), or None.

    The answer reads after "it": "holds a private key (PEM), in its member 'keys/a.pem'".
    """
    return _why(data, 0, _Budget())
