"""The federation's PKI: a root CA, a signing CA, and certificates for the aggregator and
every collaborator: new keys ECDSA P-256 by default (or P-384, or RSA-3072), existing
P-384, P-521 and RSA keys accepted; SHA-384 signatures.

Files lie under a workspace's ``cert`` folder as :class:`CertLayout` describes.
"""

from accord.pki.ca import certify, create_ca, make_federation_pki, sign_csr
from accord.pki.csr import csr_fingerprint, generate_csr
from accord.pki.install import check_own_certificate, install_certificate
from accord.pki.keys import generate_private_key, load_pem_cert, load_private_key, read_pem_bytes
from accord.pki.layout import CertLayout, validate_collaborator_name, validate_fqdn
from accord.pki.records import RevocationWatch, cert_fingerprint, issued, revoke, revoked_serials
from accord.pki.verify import CertificateRejected, common_name, verify_peer_certificate

__all__ = [
    "CertLayout",
    "CertificateRejected",
    "RevocationWatch",
    "cert_fingerprint",
    "certify",
    "check_own_certificate",
    "common_name",
    "create_ca",
    "csr_fingerprint",
    "generate_csr",
    "generate_private_key",
    "install_certificate",
    "issued",
    "load_pem_cert",
    "load_private_key",
    "make_federation_pki",
    "read_pem_bytes",
    "revoke",
    "revoked_serials",
    "sign_csr",
    "validate_collaborator_name",
    "validate_fqdn",
    "verify_peer_certificate",
]
