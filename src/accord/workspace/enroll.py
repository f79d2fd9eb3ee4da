"""At the CA: sign a site's certificate request package and add the site to the plan.

``fx collaborator certify --request-pkg`` and ``accord.interactive.Federation`` both use it;
the caller shows the request's fingerprint (and asks) between reading and signing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from accord.pki import sign_csr
from accord.pki.crl import current_crl
from accord.pki.packages import CertRequest, write_signed_package
from accord.pki.records import issued_with_status
from accord.plan.loader import add_collaborator


@dataclass(frozen=True)
class Enrolled:
    """What signing a request did: the signed package, and whether the plan gained the name."""

    name: str
    package: Path
    added_to_plan: bool | None  # None: there was no plan to add the name to


def valid_certificates(cert_dir: Path, name: str) -> list[str]:
    """Serials of the collaborator certificates of ``name`` the CA issued that are still valid."""
    return [
        record["serial"]
        for record in issued_with_status(cert_dir)
        if record.get("kind") == "collaborator" and record.get("subject") == name and record["status"] == "valid"
    ]


def enroll_collaborator(
    request: CertRequest, cert_dir: Path, plan_path: Path | None, output: Path, days: int = 365
) -> Enrolled:
    """Sign ``request`` with the CA in ``cert_dir``, add its name to the plan, write the signed package
    (the certificate, the chain and the CA's current revocation list)."""
    cert_pem = sign_csr(cert_dir, request.csr_pem, "collaborator", days, expected_name=request.name)
    added = add_collaborator(plan_path, request.name) if plan_path is not None else None
    package = write_signed_package(cert_dir, request.name, cert_pem, output, current_crl(cert_dir).pem)
    return Enrolled(request.name, package, added)
