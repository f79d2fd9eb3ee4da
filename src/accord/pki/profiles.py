"""Certificate profiles: the names and extensions the CA puts in each kind of certificate.

The CA decides every extension from the kind and the name; nothing is copied from a CSR.
"""

from __future__ import annotations

import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ORGANIZATION = "Accord Federation"
ROOT_CN = "Accord Root CA"
SIGNING_CN = "Accord Signing CA"
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")

Extension = tuple[x509.ExtensionType, bool]  # (extension, critical)


def subject_name(common_name: str, organization: str | None = None) -> x509.Name:
    """An X.509 name with CN (and O for the CAs)."""
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def subject_alt_names(kind: str, name: str) -> x509.SubjectAlternativeName:
    """SAN for a leaf: the hostname or IP of an aggregator (plus loopback names for a
    local one), or the collaborator's name."""
    general: list[x509.GeneralName] = []
    if kind == "aggregator" and name.lower() in LOCAL_NAMES:
        general = [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]
    elif kind == "aggregator":
        try:
            general = [x509.IPAddress(ipaddress.ip_address(name))]
        except ValueError:
            general = [x509.DNSName(name)]
    else:
        general = [x509.DNSName(name)]
    return x509.SubjectAlternativeName(general)


def _key_ids(public_key: CertificatePublicKeyTypes, issuer_key: CertificatePublicKeyTypes) -> list[Extension]:
    return [
        (x509.SubjectKeyIdentifier.from_public_key(public_key), False),
        (x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key), False),  # type: ignore[arg-type]
    ]


def ca_extensions(
    path_length: int, public_key: CertificatePublicKeyTypes, issuer_key: CertificatePublicKeyTypes
) -> list[Extension]:
    """A CA certificate: may sign certificates (and CRLs), ``path_length`` CAs below it."""
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
    return [
        (x509.BasicConstraints(ca=True, path_length=path_length), True),
        (usage, True),
        *_key_ids(public_key, issuer_key),
    ]


def leaf_extensions(
    kind: str, name: str, public_key: CertificatePublicKeyTypes, issuer_key: CertificatePublicKeyTypes
) -> list[Extension]:
    """An end-entity certificate: server+client auth for an aggregator, client auth for a collaborator."""
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=isinstance(public_key, rsa.RSAPublicKey),
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    purposes = (
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        if kind == "aggregator"
        else [ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    return [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (usage, True),
        (x509.ExtendedKeyUsage(purposes), False),
        (subject_alt_names(kind, name), False),
        *_key_ids(public_key, issuer_key),
    ]
