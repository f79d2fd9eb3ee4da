"""Private keys and PEM files: generate, write (keys 0600 from creation), load with clear errors."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from accord.errors import PKIError
from accord.files import atomic_write
from accord.pki.layout import fix_for_path

KeyType = Literal["ec", "ec-p384", "rsa"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

KEY_MODE = 0o600
PUBLIC_MODE = 0o644
RSA_BITS = 3072
#: what each key type makes; "ec" is the default (P-256: 128-bit security, as secure aggregation's
#: X25519 key agreement, and OpenSSL's fastest ECDSA); "ec-p384" makes what "ec" made before
KEY_TYPES: dict[str, str] = {"ec": "ECDSA P-256", "ec-p384": "ECDSA P-384", "rsa": "RSA-3072"}
_NEW_KEY_CURVES: dict[str, type[ec.EllipticCurve]] = {"ec": ec.SECP256R1, "ec-p384": ec.SECP384R1}

def generate_private_key(key_type: str = "ec") -> PrivateKey:
    """A new private key of ``key_type`` (KEY_TYPES): ECDSA P-256 (``"ec"``, the default),
    ECDSA P-384 (``"ec-p384"``) or RSA-3072 (``"rsa"``)."""
    if isinstance(key_type, str) and key_type in _NEW_KEY_CURVES:
        return ec.generate_private_key(_NEW_KEY_CURVES[key_type]())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    choices = ", ".join(f"{name!r} ({made})" for name, made in KEY_TYPES.items())
    raise PKIError(f"unknown key type {key_type!r}", f"use one of {choices}")

def private_key_pem(key: PrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM of ``key``."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )

def _write_fd(fd: int, data: bytes, mode: int) -> None:
    """Write ``data`` to ``fd``, force ``mode`` (umask may have narrowed it) and close."""
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), mode)
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())

def write_private_key(path: Path, key: PrivateKey, overwrite: bool = False) -> Path:
    """Write ``key`` to ``path`` with mode 0600 from creation; refuse an existing file unless ``overwrite``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = private_key_pem(key)
    if not overwrite:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_MODE)
        except FileExistsError:
            raise PKIError(
                f"private key {path} already exists",
                "keep using it, or delete it (and its .csr and .crt) to make a new one",
            ) from None
        _write_fd(fd, data, KEY_MODE)
    else:
        atomic_write(path, data, KEY_MODE)
    if stat.S_IMODE(path.stat().st_mode) != KEY_MODE:  # pragma: no cover - defensive
        os.chmod(path, KEY_MODE)
    return path

def write_public_file(path: Path, data: bytes, overwrite: bool = True) -> Path:
    """Write a certificate, CSR or chain (PEM) with mode 0644, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not overwrite and path.exists():
        raise PKIError(f"{path} already exists", "delete it first if you mean to replace it")
    return atomic_write(path, data, PUBLIC_MODE)

def read_pem_bytes(path: str | os.PathLike[str], what: str, fix: str) -> bytes:
    """Read a PEM file, or raise PKIError naming ``what``, the file and ``fix``."""
    source = Path(path)
    try:
        data = source.read_bytes()
    except FileNotFoundError:
        raise PKIError(f"{what} {source} does not exist", fix) from None
    except IsADirectoryError:
        raise PKIError(f"{what} {source} is a directory, not a file", fix) from None
    except OSError as exc:
        raise PKIError(f"{what} {source} cannot be read: {exc.strerror or exc}", fix) from None
    if b"-----BEGIN " not in data:
        raise PKIError(f"{what} {source} is not a PEM file", fix)
    return data

def load_pem_cert(
    path: str | os.PathLike[str], what: str = "certificate", fix: str | None = None
) -> x509.Certificate:
    """The first certificate in the PEM file at ``path``; PKIError naming the file if it is not one."""
    fix = fix or fix_for_path(path)
    data = read_pem_bytes(path, what, fix)
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise PKIError(f"{what} {path} is not a valid PEM certificate: {exc}", fix) from None

def load_pem_certs(
    path: str | os.PathLike[str], what: str = "certificate chain", fix: str | None = None, *, data: bytes | None = None
) -> list[x509.Certificate]:
    """Every certificate in the PEM file at ``path`` (a chain), in file order; ``data``: the
    file's bytes as read_pem_bytes read them, if the caller has them (None: read here)."""
    fix = fix or fix_for_path(path)
    if data is None:
        data = read_pem_bytes(path, what, fix)
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise PKIError(f"{what} {path} is not a valid PEM certificate chain: {exc}", fix) from None

def load_private_key(
    path: str | os.PathLike[str], what: str = "private key", fix: str | None = None
) -> PrivateKey:
    """The unencrypted EC or RSA private key at ``path``; PKIError naming the file otherwise."""
    fix = fix or fix_for_path(path)
    data = read_pem_bytes(path, what, fix)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise PKIError(f"{what} {path} is encrypted; Accord expects an unencrypted key", fix) from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise PKIError(f"{what} {path} is not a valid PEM private key: {exc}", fix) from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise PKIError(f"{what} {path} is neither an EC nor an RSA key", fix)
    return key
