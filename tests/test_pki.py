"""accord.pki: CA creation, CSR signing, certificate checks, and a real mutual-TLS handshake."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import stat
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from accord.errors import PKIError
from accord.pki import (
    CertLayout,
    certify,
    common_name,
    create_ca,
    csr_fingerprint,
    generate_csr,
    load_pem_cert,
    load_private_key,
    make_federation_pki,
    revoke,
    revoked_serials,
    sign_csr,
    verify_peer_certificate,
)
from accord.pki.signatures import CollaboratorVerifier, signer_for


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _basic(cert: x509.Certificate) -> x509.BasicConstraints:
    return cert.extensions.get_extension_for_class(x509.BasicConstraints).value


def _index(layout: CertLayout) -> list[dict]:
    return [json.loads(line) for line in layout.index.read_text().splitlines()]


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> CertLayout:
    """One EC federation shared by the read-only tests: CA, localhost aggregator, two collaborators."""
    return make_federation_pki(tmp_path_factory.mktemp("fed") / "cert", "localhost", ["alice", "bob"])


@pytest.fixture(scope="module")
def other_federation(tmp_path_factory: pytest.TempPathFactory) -> CertLayout:
    """An unrelated federation with the same CA names (a different CA)."""
    return make_federation_pki(tmp_path_factory.mktemp("other") / "cert", "localhost", ["alice", "mallory"])


def _check_ca(layout: CertLayout, key_class: type, hash_name: str = "sha384") -> None:
    for path in (layout.root_key, layout.signing_key):
        assert _mode(path) == 0o600, path
    for path in (layout.root_cert, layout.signing_cert, layout.chain):
        assert _mode(path) == 0o644, path
    root, signing = load_pem_cert(layout.root_cert), load_pem_cert(layout.signing_cert)
    assert root.issuer == root.subject
    root.verify_directly_issued_by(root)
    signing.verify_directly_issued_by(root)
    assert _basic(root).ca and _basic(root).path_length == 1
    assert _basic(signing).ca and _basic(signing).path_length == 0
    for cert in (root, signing):
        assert cert.signature_hash_algorithm.name == hash_name
        assert isinstance(cert.public_key(), key_class)
        assert cert.not_valid_after_utc - cert.not_valid_before_utc >= dt.timedelta(days=3650)
    chain = x509.load_pem_x509_certificates(layout.chain.read_bytes())
    assert chain == [root, signing]
    assert [r["kind"] for r in _index(layout)] == ["root", "signing"]


def _curve(path: Path) -> type[ec.EllipticCurve]:
    """The curve of the EC key or certificate at ``path``."""
    key = load_private_key(path) if path.suffix == ".key" else load_pem_cert(path).public_key()
    assert isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)), path
    return type(key.curve)


def test_create_ca_ec_is_p256_by_default(tmp_path: Path) -> None:
    layout = create_ca(tmp_path / "cert")
    _check_ca(layout, ec.EllipticCurvePublicKey)
    for path in (layout.root_key, layout.signing_key, layout.root_cert, layout.signing_cert):
        assert _curve(path) is ec.SECP256R1, path
    assert _mode(layout.root_key.parent) == 0o700
    cert_path, key_path = certify(layout.cert_dir, "collaborator", "alice")
    assert _curve(key_path) is _curve(cert_path) is ec.SECP256R1
    assert load_pem_cert(cert_path).signature_hash_algorithm.name == "sha384"


def test_p384_is_a_choice(tmp_path: Path) -> None:
    layout = create_ca(tmp_path / "cert", key_type="ec-p384")
    _check_ca(layout, ec.EllipticCurvePublicKey)
    cert_path, key_path = certify(layout.cert_dir, "collaborator", "alice", key_type="ec-p384")
    for path in (layout.root_key, layout.signing_key, layout.signing_cert, cert_path, key_path):
        assert _curve(path) is ec.SECP384R1, path
    with pytest.raises(PKIError, match=r"unknown key type 'ec-p999'.*'ec' \(ECDSA P-256\), 'ec-p384' \(ECDSA P-384\), 'rsa'"):
        generate_csr(layout.cert_dir, "collaborator", "bob", "ec-p999")
    assert not layout.collaborator_key("bob").exists()


def test_rsa_federation(tmp_path: Path) -> None:
    layout = create_ca(tmp_path / "cert", key_type="rsa")
    _check_ca(layout, rsa.RSAPublicKey)
    assert load_pem_cert(layout.root_cert).public_key().key_size == 3072
    cert_path, key_path = certify(layout.cert_dir, "aggregator", "agg.example.org", key_type="rsa")
    assert _mode(key_path) == 0o600
    cert = verify_peer_certificate(cert_path.read_bytes(), layout.chain)
    assert cert.public_key().key_size == 3072
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment


def test_create_ca_refuses_to_overwrite(tmp_path: Path) -> None:
    layout = create_ca(tmp_path / "cert")
    before = layout.root_key.read_bytes()
    with pytest.raises(PKIError, match="already exists"):
        create_ca(tmp_path / "cert")
    assert layout.root_key.read_bytes() == before


def test_collaborator_flow(tmp_path: Path) -> None:
    layout = create_ca(tmp_path / "cert")
    csr_path, fingerprint = generate_csr(layout.cert_dir, "collaborator", "site-1.a_b")
    assert csr_path == layout.collaborator_csr("site-1.a_b")
    assert _mode(layout.collaborator_key("site-1.a_b")) == 0o600
    csr_pem = csr_path.read_bytes()
    assert len(fingerprint) == 96 and fingerprint == csr_fingerprint(csr_pem) == csr_fingerprint(csr_pem)
    int(fingerprint, 16)

    cert_pem = sign_csr(layout.cert_dir, csr_pem, "collaborator")
    cert = verify_peer_certificate(cert_pem, layout.chain, revoked_serials(layout.cert_dir))
    assert common_name(cert) == "site-1.a_b"
    assert cert.signature_hash_algorithm.name == "sha384"
    assert not _basic(cert).ca
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["site-1.a_b"]
    assert dt.timedelta(days=364) < cert.not_valid_after_utc - cert.not_valid_before_utc <= dt.timedelta(days=366)

    entries = _index(layout)
    assert [e["kind"] for e in entries] == ["root", "signing", "collaborator"]
    last = entries[-1]
    assert last["serial"] == format(cert.serial_number, "x") and last["subject"] == "site-1.a_b"
    assert last["fingerprint_sha384"] == cert.fingerprint(hashes.SHA384()).hex()
    assert set(last) == {"serial", "subject", "kind", "not_before", "not_after", "issued_at", "fingerprint_sha384"}
    assert last["issued_at"].endswith("Z")


def test_generate_csr_refuses_to_replace_key(tmp_path: Path) -> None:
    generate_csr(tmp_path, "collaborator", "alice")
    key_path = CertLayout(tmp_path).collaborator_key("alice")
    before = key_path.read_bytes()
    with pytest.raises(PKIError, match="already exists"):
        generate_csr(tmp_path, "collaborator", "alice")
    assert key_path.read_bytes() == before
    generate_csr(tmp_path, "collaborator", "alice", overwrite=True)
    assert key_path.read_bytes() != before and _mode(key_path) == 0o600


def test_server_cert_localhost(federation: CertLayout) -> None:
    cert = load_pem_cert(federation.aggregator_cert("localhost"))
    assert common_name(cert) == "localhost"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    assert _mode(federation.aggregator_key("localhost")) == 0o600
    assert federation.aggregator_csr("localhost").exists()


def test_foreign_cert_refused(federation: CertLayout, other_federation: CertLayout) -> None:
    foreign = other_federation.collaborator_cert("alice").read_bytes()
    with pytest.raises(PKIError, match="not signed by this federation"):
        verify_peer_certificate(foreign, federation.chain)
    # a CA certificate itself is not a participant
    with pytest.raises(PKIError):
        verify_peer_certificate(federation.signing_cert.read_bytes(), federation.chain)


def test_expired_and_not_yet_valid_refused(tmp_path: Path) -> None:
    layout = create_ca(tmp_path / "cert")
    csr_path, _ = generate_csr(layout.cert_dir, "collaborator", "alice")
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    old = sign_csr(layout.cert_dir, csr_path.read_bytes(), "collaborator", days=2, now=past)
    with pytest.raises(PKIError, match="expired"):
        verify_peer_certificate(old, layout.chain)
    fresh = sign_csr(layout.cert_dir, csr_path.read_bytes(), "collaborator")
    with pytest.raises(PKIError, match="not valid until"):
        verify_peer_certificate(fresh, layout.chain, now=past)


def test_revoked_refused(tmp_path: Path) -> None:
    layout = make_federation_pki(tmp_path / "cert", "agg.example.org", ["alice", "bob"])
    alice = load_pem_cert(layout.collaborator_cert("alice"))
    bob = load_pem_cert(layout.collaborator_cert("bob"))
    assert revoked_serials(layout.cert_dir) == set()
    message = revoke(layout.cert_dir, "alice", reason="laptop stolen")
    assert "alice" in message
    assert revoke(layout.cert_dir, "alice").startswith("already revoked")
    revoke(layout.cert_dir, format(bob.serial_number, "x"))
    assert revoked_serials(layout.cert_dir) == {alice.serial_number, bob.serial_number}
    record = json.loads(layout.revoked.read_text().splitlines()[0])
    assert record["subject"] == "alice" and record["reason"] == "laptop stolen" and record["revoked_at"]
    with pytest.raises(PKIError, match="revoked"):
        verify_peer_certificate(layout.collaborator_cert("alice").read_bytes(), layout.chain, revoked_serials(layout.cert_dir))
    with pytest.raises(PKIError, match="no aggregator or collaborator"):
        revoke(layout.cert_dir, "nobody")


def test_missing_files_name_path_and_fix(tmp_path: Path) -> None:
    layout = CertLayout(tmp_path / "cert")
    with pytest.raises(PKIError) as err:
        load_private_key(layout.collaborator_key("alice"))
    assert str(layout.collaborator_key("alice")) in str(err.value)
    assert "generate-cert-request -n alice" in (err.value.fix or "")
    with pytest.raises(PKIError, match="fx workspace certify"):
        load_pem_cert(layout.root_cert)
    with pytest.raises(PKIError, match="fx aggregator certify"):
        load_private_key(layout.aggregator_key("localhost"))
    layout.cert_dir.mkdir()
    (layout.cert_dir / "junk.key").write_text("not a key")
    with pytest.raises(PKIError, match="not a PEM file"):
        load_private_key(layout.cert_dir / "junk.key")


def test_bad_names_refused(tmp_path: Path) -> None:
    layout = create_ca(tmp_path / "cert")
    for bad in ("", "../etc", "a/b", "-lead", "x" * 65, "sp ace", "naïve"):
        with pytest.raises(PKIError, match="invalid collaborator name"):
            generate_csr(layout.cert_dir, "collaborator", bad)
    for reserved in ("aggregator", "Aggregator"):  # the aggregated metrics' origin: a site must not pass as it
        with pytest.raises(PKIError, match="is reserved"):
            generate_csr(layout.cert_dir, "collaborator", reserved)
    for bad in ("", "bad_host!", "-a.example.org", "a..b", "x" * 65):
        with pytest.raises(PKIError, match="invalid aggregator address"):
            generate_csr(layout.cert_dir, "aggregator", bad)
    with pytest.raises(PKIError, match="unknown certificate kind"):
        generate_csr(layout.cert_dir, "root", "x")  # type: ignore[arg-type]


def test_sign_csr_checks_request(tmp_path: Path, other_federation: CertLayout) -> None:
    layout = create_ca(tmp_path / "cert")
    # a CSR whose CN is not a valid collaborator name
    key = ec.generate_private_key(ec.SECP384R1())
    bad_cn = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "../../x")]))
        .sign(key, hashes.SHA384())
    )
    with pytest.raises(PKIError, match="invalid collaborator name"):
        sign_csr(layout.cert_dir, bad_cn.public_bytes(Encoding.PEM), "collaborator")
    with pytest.raises(PKIError, match="not a valid certificate signing request"):
        sign_csr(layout.cert_dir, b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", "collaborator")
    # the CA sets the extensions: a CSR asking for CA powers still gets a leaf
    greedy = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "greedy")]))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA384())
    )
    cert = x509.load_pem_x509_certificate(sign_csr(layout.cert_dir, greedy.public_bytes(Encoding.PEM), "collaborator"))
    assert not _basic(cert).ca
    # signing without a CA names the missing file and the command
    with pytest.raises(PKIError, match="fx workspace certify"):
        sign_csr(tmp_path / "empty", greedy.public_bytes(Encoding.PEM), "collaborator")


# --- a real gRPC mutual-TLS handshake with these certificates -------------------------------

_METHOD = "/accord.test.Echo/WhoAmI"


def _serve(layout: CertLayout) -> tuple[grpc.Server, int]:
    def who_am_i(request: bytes, context: grpc.ServicerContext) -> bytes:
        return context.auth_context()["x509_common_name"][0]

    handler = grpc.method_handlers_generic_handler(
        "accord.test.Echo",
        {
            "WhoAmI": grpc.unary_unary_rpc_method_handler(
                who_am_i, request_deserializer=None, response_serializer=None
            )
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[handler])
    credentials = grpc.ssl_server_credentials(
        [(layout.aggregator_key("localhost").read_bytes(), layout.aggregator_cert("localhost").read_bytes())],
        root_certificates=layout.chain.read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return server, port


def _call(port: int, chain: Path, key: Path, cert: Path) -> bytes:
    credentials = grpc.ssl_channel_credentials(chain.read_bytes(), key.read_bytes(), cert.read_bytes())
    with grpc.secure_channel(f"localhost:{port}", credentials) as channel:
        return channel.unary_unary(_METHOD)(b"", timeout=10)


@pytest.fixture(scope="module")
def p384_federation(tmp_path_factory: pytest.TempPathFactory) -> CertLayout:
    """A federation made before P-256 became the default (every key P-384, as ``ec-p384`` makes
    them) that then took in a site with a new default key: alice and the aggregator P-384, carol P-256."""
    layout = make_federation_pki(tmp_path_factory.mktemp("p384") / "cert", "localhost", ["alice"], key_type="ec-p384")
    certify(layout.cert_dir, "collaborator", "carol")
    assert _curve(layout.signing_cert) is _curve(layout.collaborator_key("alice")) is ec.SECP384R1
    assert _curve(layout.collaborator_key("carol")) is ec.SECP256R1
    return layout


def test_signatures_are_ecdsa_sha384_on_every_curve_and_verify_across_them(
    federation: CertLayout, p384_federation: CertLayout
) -> None:
    """A P-384 site's signatures (as every one written before P-256 became the default) and a
    P-256 site's both verify, each ECDSA over SHA-384 (the format unchanged); a signature
    under the wrong key or over other bytes does not."""
    data = b"the statement"
    for layout, name in ((p384_federation, "alice"), (p384_federation, "carol"), (federation, "bob")):
        key = load_private_key(layout.collaborator_key(name))
        signature = signer_for(key)(data)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        key.public_key().verify(signature, data, ec.ECDSA(hashes.SHA384()))  # raises if it is not ECDSA-SHA384
        verify = CollaboratorVerifier(layout.chain)
        certificate = layout.collaborator_cert(name).read_bytes()
        assert verify(name, certificate, data, signature)
        assert not verify(name, certificate, data + b"!", signature)
    alice, carol = (p384_federation.collaborator_cert(n).read_bytes() for n in ("alice", "carol"))
    by_carol = signer_for(load_private_key(p384_federation.collaborator_key("carol")))(data)
    assert not CollaboratorVerifier(p384_federation.chain)("alice", alice, data, by_carol)
    assert CollaboratorVerifier(p384_federation.chain)("carol", carol, data, by_carol)


def test_grpc_mutual_tls_in_a_p384_federation_with_p256_and_p384_sites(p384_federation: CertLayout) -> None:
    server, port = _serve(p384_federation)  # the aggregator's P-384 certificate
    try:
        for name in ("alice", "carol"):
            chain, key, cert = p384_federation.chain, p384_federation.collaborator_key(name), p384_federation.collaborator_cert(name)
            assert _call(port, chain, key, cert) == name.encode()
    finally:
        server.stop(None)


def test_grpc_mutual_tls(federation: CertLayout, other_federation: CertLayout) -> None:
    server, port = _serve(federation)
    try:
        name = _call(port, federation.chain, federation.collaborator_key("bob"), federation.collaborator_cert("bob"))
        assert name == b"bob"
        with pytest.raises(grpc.RpcError) as err:
            _call(
                port,
                federation.chain,
                other_federation.collaborator_key("mallory"),
                other_federation.collaborator_cert("mallory"),
            )
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(None)
