"""Sign with a participant's private key and check a named collaborator's signature against its
certificate, chained to the federation's CA (the hooks signed SecAgg+ takes: accord.secagg.signing).

ECDSA keys sign with SHA-384 whatever their curve (P-256, the default key; P-384, the default
before it; P-521), RSA keys with RSA-PSS over SHA-256; both from ``cryptography``. SHA-384 on
P-256 is what FIPS 186 allows (a hash at least as strong as the curve), and one hash for every
curve keeps every signature ever written (audit seals: docs/audit.md) verifying unchanged.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections.abc import Callable, Collection
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from accord.errors import PKIError
from accord.pki.keys import PrivateKey, read_pem_bytes
from accord.pki.layout import CHAIN_FIX
from accord.pki.verify import common_name, signing_ca, verify_peer_certificate

log = logging.getLogger("accord.pki")

_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.MAX_LENGTH)


def signer_for(key: PrivateKey) -> Callable[[bytes], bytes]:
    """A function that signs bytes with ``key`` (ECDSA-SHA384 on any curve, or RSA-PSS-SHA256)."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return lambda data: key.sign(data, ec.ECDSA(hashes.SHA384()))
    if isinstance(key, rsa.RSAPrivateKey):
        return lambda data: key.sign(data, _PSS, hashes.SHA256())
    raise PKIError(f"cannot sign with a {type(key).__name__}", "use an ECDSA or RSA key (fx collaborator generate-cert-request makes one)")


def signature_valid(cert: x509.Certificate, data: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is the signature of ``data`` by ``cert``'s key (as ``signer_for`` signs)."""
    key = cert.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(hashes.SHA384()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, _PSS, hashes.SHA256())
        else:
            return False
    except InvalidSignature:
        return False
    return True


def is_collaborator_certificate(cert: x509.Certificate) -> bool:
    """A collaborator's certificate: client auth only (the aggregator's also has server auth)."""
    try:
        purposes = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return ExtendedKeyUsageOID.CLIENT_AUTH in purposes and ExtendedKeyUsageOID.SERVER_AUTH not in purposes


class CollaboratorVerifier:
    """``verifier(site, certificate, data, signature)``: whether ``certificate`` (DER or PEM) is
    a collaborator certificate of the federation (issued by the chain's signing CA, valid now,
    its serial not in ``revoked()``, asked on every call) whose common name is ``site``, and
    ``signature`` its signature of ``data``. The reason for a False is logged. Certificates whose
    chain and name passed are remembered by their bytes (one chain check per site and
    certificate); a remembered one is still checked on every call for revocation and for its
    validity and its signing CA's at ``now``, and all are forgotten when the chain file's
    content changes. Its bytes say whether it changed: the file is read again whenever its
    status (device, inode, size, modification and change times) differs from when it was last
    read, on every call while that read came less than RACY_SECONDS after the file's last change
    (a rewrite within the file system's timestamp granularity keeps the status; on Linux and
    macOS the change time cannot be set back), and TRUST_SECONDS after the last read at most.
    The chain's signing CA is parsed and checked once per content."""

    #: how long after the chain file's last change its status alone is not trusted to say it is unchanged
    RACY_SECONDS = 2.0
    #: how long an unchanged status stands for the last read at most: then the file is read again
    #: anyway (a file system whose status can miss a change, e.g. NFS's attribute cache, or
    #: Windows' st_ctime, its creation time, sees a rotation within this bound)
    TRUST_SECONDS = 10.0

    def __init__(
        self,
        chain_path: str | os.PathLike[str],
        revoked: Callable[[], Collection[int]] = frozenset,
        now: dt.datetime | None = None,
    ) -> None:
        self.chain_path, self.revoked, self.now = chain_path, revoked, now
        #: (site, certificate bytes) -> (the certificate, the end of its and its signing CA's
        #: validity, the chain's bytes it was checked under)
        self._checked: dict[tuple[str, bytes], tuple[x509.Certificate, dt.datetime, bytes]] = {}
        self._chain: tuple[bytes, x509.Certificate] | None = None
        #: (the chain file's status before its last read, the monotonic time until which that
        #: status stands for the read, the chain that read gave): one tuple, assigned at once, so
        #: concurrent calls never pair one read's status with another's chain
        self._read: tuple[tuple[int, ...], float, tuple[bytes, x509.Certificate]] | None = None

    def _signing_ca(self) -> tuple[bytes, x509.Certificate]:
        """The chain file's bytes and its signing CA, parsed and checked again only when those
        bytes change (which also forgets every remembered certificate); PKIError as signing_ca's."""
        try:
            st = os.stat(self.chain_path)
            status: tuple[int, ...] | None = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        except OSError:
            status = None  # read_pem_bytes says what is wrong
        read = self._read
        if read is not None and read[0] == status and time.monotonic() < read[1]:
            return read[2]
        data = read_pem_bytes(self.chain_path, "CA certificate chain", CHAIN_FIX)
        chain = self._chain
        if chain is None or chain[0] != data:
            self._checked.clear()
            chain = self._chain = (data, signing_ca(Path(self.chain_path), data))
        if status is not None and time.time_ns() - max(status[3], status[4]) > self.RACY_SECONDS * 1e9:
            self._read = (status, time.monotonic() + self.TRUST_SECONDS, chain)
        return chain

    def certificate(self, site: str, certificate: bytes) -> x509.Certificate | None:
        """The parsed ``certificate`` if it is a valid, unrevoked collaborator certificate named ``site``, else None (logged)."""
        try:
            chain, signing = self._signing_ca()
        except PKIError as exc:
            log.warning("signature of %r refused: the federation's chain does not check out: %s", site, exc)  # exc names the file and the fix
            return None
        known = self._checked.get((site, certificate))
        if known is not None and known[2] is chain:  # (one checked under an older chain by a concurrent call: checked again)
            cert, until, _ = known
            if cert.serial_number in self.revoked():
                log.warning("signature of %r refused: its certificate (serial %x) has been revoked", site, cert.serial_number)
                return None
            moment = (self.now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
            if cert.not_valid_before_utc <= moment <= until:
                return cert
            self._checked.pop((site, certificate), None)  # outside its or its CA's validity now: the full check says which
        try:
            cert = verify_peer_certificate(certificate, self.chain_path, set(self.revoked()), self.now, signing=signing)
            name = common_name(cert)
        except PKIError as exc:
            log.warning("signature of %r refused: its certificate does not check out: %s", site, exc)
            return None
        if name != site:
            log.warning("signature of %r refused: its certificate names %r", site, name)
            return None
        if not is_collaborator_certificate(cert):
            log.warning("signature of %r refused: its certificate is not a collaborator's (no client-auth-only usage)", site)
            return None
        self._checked[(site, certificate)] = (cert, min(cert.not_valid_after_utc, signing.not_valid_after_utc), chain)
        return cert

    def __call__(self, site: str, certificate: bytes, data: bytes, signature: bytes) -> bool:
        cert = self.certificate(site, certificate)
        if cert is None:
            return False
        if not signature_valid(cert, data, signature):
            log.warning("signature of %r refused: it does not verify under its certificate's key", site)
            return False
        return True
