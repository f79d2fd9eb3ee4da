"""Federation: the operator's side of an interactive experiment, from Python.

It is the aggregator's workspace: the federation's certificate authority (``fx workspace
certify``), the aggregator's certificate (``fx aggregator certify``) and the plan, and it
signs the sites' certificate request packages (``fx collaborator certify --request-pkg``),
with the same code as those commands.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from accord.errors import AccordError, PKIError
from accord.logs import ensure_logging
from accord.pki import CertLayout, cert_fingerprint, certify, create_ca, load_pem_cert, validate_fqdn
from accord.pki.packages import read_request_package
from accord.plan.loader import read_yaml
from accord.workspace.create import LAYOUT
from accord.workspace.enroll import enroll_collaborator, valid_certificates

log = logging.getLogger("accord.interactive")


class Federation:
    """The aggregator's workspace at ``workspace``, its CA and certificate (made on first use).

    ``aggregator_address`` is the host name or IP address the sites connect to (it is the
    aggregator certificate's name); ``port`` its TCP port. Creating a Federation again on
    the same folder reuses the CA and the certificate.
    """

    def __init__(
        self,
        workspace: str | os.PathLike[str],
        aggregator_address: str = "localhost",
        port: int = 50051,
        key_type: str = "ec",
    ) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise AccordError(f"port {port!r} is not a TCP port", "pass a whole number between 1 and 65535")
        self.workspace = Path(workspace).resolve()
        self.cert_dir = self.workspace / "cert"  # the CA's keys stay here, never in an archive
        self.plan_path = self.workspace / "plan" / "plan.yaml"
        self.aggregator_address = validate_fqdn(aggregator_address)
        self.port = port
        ensure_logging()
        for folder in LAYOUT:
            (self.workspace / folder).mkdir(parents=True, exist_ok=True)
        layout = CertLayout(self.cert_dir)
        if not layout.root_cert.exists():
            create_ca(self.cert_dir, key_type)
            log.info("certificate authority created in %s (root fingerprint %s)", self.cert_dir, self.root_fingerprint)
        if not layout.aggregator_cert(self.aggregator_address).exists():
            cert, _ = certify(self.cert_dir, "aggregator", self.aggregator_address, key_type)
            log.info("aggregator certificate for %s: %s", self.aggregator_address, cert)

    @property
    def root_fingerprint(self) -> str:
        """SHA-384 fingerprint of the root CA: the sites compare it when they import their certificate."""
        return cert_fingerprint(load_pem_cert(CertLayout(self.cert_dir).root_cert))

    @property
    def collaborators(self) -> list[str]:
        """The sites whose requests were signed (the plan's collaborators list)."""
        return list(read_yaml(self.plan_path).get("collaborators") or []) if self.plan_path.is_file() else []

    def certify_collaborator(
        self,
        request_pkg: str | os.PathLike[str],
        output: str | os.PathLike[str] | None = None,
        fingerprint: str | None = None,
        days: int = 365,
    ) -> Path:
        """Sign a site's ``col_NAME_to_agg_cert_request.zip``, add NAME to the plan; returns the signed package.

        Pass the ``fingerprint`` the site's operator read to you (by another channel) to have
        it checked; without it, compare the logged one yourself before sending the package.
        """
        request = read_request_package(Path(request_pkg))
        if fingerprint is not None and fingerprint.strip().lower() != request.fingerprint:
            raise PKIError(
                f"the request of {request.name} has fingerprint {request.fingerprint[:16]}..., "
                f"not the {fingerprint.strip()[:16]}... the site gave",
                "do not sign it; ask the site for a new request package",
            )
        if not self.plan_path.is_file():
            raise AccordError(
                f"no plan in {self.workspace} yet to add {request.name} to",
                "call FLExperiment.prepare_workspace_distribution(...) first",
            )
        held = valid_certificates(self.cert_dir, request.name)
        if held:
            log.warning(
                "%s already holds certificate(s) %s; revoke any this one replaces", request.name, ", ".join(held)
            )
        log.info("signing the request of %s (fingerprint %s)", request.name, request.fingerprint)
        target = Path(output) if output is not None else self.workspace
        done = enroll_collaborator(request, self.cert_dir, self.plan_path, target, days)
        return done.package
