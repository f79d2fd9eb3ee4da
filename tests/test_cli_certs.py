"""fx's certificate commands, in process: the CA, the aggregator's certificate, a site's
request package, signing it at the CA, importing the answer, revoking and listing."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import stat
import zipfile
from pathlib import Path

import pytest
import yaml

from accord.cli.main import main
from accord.errors import PKIError
from accord.pki import CertLayout, certify, create_ca, csr_fingerprint, generate_csr, load_pem_cert
from accord.pki.install import check_own_certificate
from accord.workspace.create import create_workspace

NAME = "hospital1"
REQUEST = f"col_{NAME}_to_agg_cert_request.zip"
SIGNED = f"agg_to_col_{NAME}_signed_cert.zip"


def fx(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def fingerprints(text: str) -> set[str]:
    """The SHA-384 fingerprints printed (not the plan or workspace hashes)."""
    return set(re.findall(r"fingerprint \(SHA-384\): ([0-9a-f]{96})\b", text))


def members(package: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(package) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def collaborators(ws: Path) -> list[str]:
    return yaml.safe_load((ws / "plan" / "plan.yaml").read_text())["collaborators"]


@pytest.fixture
def ca_ws(tmp_path: Path, capsys) -> Path:
    """The aggregator's workspace, holding the federation's CA."""
    ws = create_workspace(tmp_path / "agg", "torch_digits")
    assert fx(capsys, "workspace", "certify", "-w", ws)[0] == 0
    return ws


@pytest.fixture
def site_ws(tmp_path: Path) -> Path:
    return create_workspace(tmp_path / "site", "torch_digits")


def request(capsys, site: Path, out: Path, *extra: str) -> str:
    code, stdout, err = fx(capsys, "collaborator", "generate-cert-request", "-n", NAME, "-w", site, "--output", out, *extra)
    assert code == 0, err
    return stdout


# -- the CA and the aggregator ----------------------------------------------------------------


def test_workspace_certify_makes_the_ca_once(tmp_path: Path, capsys) -> None:
    ws = create_workspace(tmp_path / "agg", "torch_digits")
    code, out, _ = fx(capsys, "workspace", "certify", "-w", ws, "--key-type", "rsa")
    layout = CertLayout(ws / "cert")
    assert code == 0 and str(layout.root_cert) in out and str(layout.chain) in out and "RSA" in out
    assert stat.S_IMODE(layout.signing_key.stat().st_mode) == 0o600
    code, _, err = fx(capsys, "workspace", "certify", "-w", ws)
    assert code == 2 and "already exists" in err and err.count("\n") == 1


def test_new_keys_are_p256_unless_asked_and_a_p384_ca_signs_them(tmp_path: Path, capsys) -> None:
    from accord.cli.aggregator import generate_cert_request as aggregator_request
    from accord.cli.ca import certify_cmd
    from accord.cli.collaborator import generate_cert_request as site_request
    from accord.pki.keys import KEY_TYPES

    for command in (certify_cmd, aggregator_request, site_request):  # the option's names are the PKI's
        (option,) = [p for p in command.params if p.name == "key_type"]
        assert list(option.type.choices) == list(KEY_TYPES) and option.default == "ec", command.name
    code, out, _ = fx(capsys, "workspace", "certify", "-w", tmp_path / "new")
    assert code == 0 and "(ECDSA P-256, valid until" in out
    ws = create_workspace(tmp_path / "agg", "torch_digits")
    code, out, _ = fx(capsys, "workspace", "certify", "-w", ws, "--key-type", "ec-p384")
    layout = CertLayout(ws / "cert")
    assert code == 0 and "(ECDSA P-384, valid until" in out
    assert load_pem_cert(layout.signing_cert).public_key().curve.name == "secp384r1"
    assert fx(capsys, "aggregator", "generate-cert-request", "-w", ws)[0] == 0  # a new key: the default
    code, _, err = fx(capsys, "aggregator", "certify", "-w", ws, "--yes")
    assert code == 0, err
    assert load_pem_cert(layout.aggregator_cert("localhost")).public_key().curve.name == "secp256r1"
    check_own_certificate(layout.cert_dir, "aggregator", "localhost")


def test_aggregator_request_and_signing_show_the_same_fingerprint(ca_ws: Path, capsys) -> None:
    code, asked, _ = fx(capsys, "aggregator", "generate-cert-request", "-w", ca_ws)  # FQDN from the plan
    assert code == 0 and "agg_localhost.csr" in asked
    code, signed, err = fx(capsys, "aggregator", "certify", "-w", ca_ws, "--yes")
    assert code == 0, err
    assert len(fingerprints(asked)) == 1 and fingerprints(asked) == fingerprints(signed)
    layout = CertLayout(ca_ws / "cert")
    assert stat.S_IMODE(layout.aggregator_key("localhost").stat().st_mode) == 0o600
    check_own_certificate(layout.cert_dir, "aggregator", "localhost")


def test_without_a_plan_the_aggregator_name_is_this_hosts(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr("socket.getfqdn", lambda: "agg.example.org")
    bare = tmp_path / "bare"
    assert fx(capsys, "workspace", "certify", "-w", bare)[0] == 0
    code, out, err = fx(capsys, "aggregator", "generate-cert-request", "-w", bare)
    assert code == 0 and "agg_agg.example.org.csr" in out, err


def test_signing_waits_for_a_yes(ca_ws: Path, capsys, monkeypatch) -> None:
    fx(capsys, "aggregator", "generate-cert-request", "-w", ca_ws)
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    code, out, err = fx(capsys, "aggregator", "certify", "-w", ca_ws)
    assert code == 130 and "aborted" in err and fingerprints(out)
    assert not CertLayout(ca_ws / "cert").aggregator_cert("localhost").exists()


# -- a site's request package -------------------------------------------------------------------


def test_the_request_package_holds_the_csr_and_its_manifest_only(site_ws: Path, tmp_path: Path, capsys) -> None:
    out = request(capsys, site_ws, tmp_path / "outbox", "--data-path", "3")
    package = tmp_path / "outbox" / REQUEST
    assert str(package) in out
    contents = members(package)
    assert set(contents) == {f"col_{NAME}.csr", "manifest.json"}
    assert not any(b"PRIVATE KEY" in data for data in contents.values())
    manifest = json.loads(contents["manifest.json"])
    fingerprint = csr_fingerprint(contents[f"col_{NAME}.csr"])
    assert manifest == {"kind": "collaborator", "name": NAME, "fingerprint_sha384": fingerprint}
    assert fingerprints(out) == {fingerprint}
    key = CertLayout(site_ws / "cert").collaborator_key(NAME)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert yaml.safe_load((site_ws / "plan" / "data.yaml").read_text()) == {NAME: "3"}

    again = request(capsys, site_ws, tmp_path / "outbox")  # keeps the data path and the key
    assert "reusing the private key" in again and "3 (as in" in again
    assert yaml.safe_load((site_ws / "plan" / "data.yaml").read_text()) == {NAME: "3"}


def test_the_first_request_needs_a_data_path(site_ws: Path, tmp_path: Path, capsys) -> None:
    code, _, err = fx(capsys, "collaborator", "generate-cert-request", "-n", NAME, "-w", site_ws, "--output", tmp_path)
    assert code == 2 and "--data-path" in err and "data.yaml" in err
    assert not CertLayout(site_ws / "cert").collaborator_key(NAME).exists()


# -- signing at the CA, importing at the site ---------------------------------------------------------


def test_the_ca_signs_a_request_and_the_site_installs_the_answer(ca_ws: Path, site_ws: Path, tmp_path: Path, capsys) -> None:
    outbox = tmp_path / "outbox"
    asked = request(capsys, site_ws, outbox, "--data-path", "1")
    plan_file = ca_ws / "plan" / "plan.yaml"
    plan_file.chmod(0o444)  # frozen: the collaborators list may still grow
    code, answered, err = fx(capsys, "collaborator", "certify", "--request-pkg", outbox / REQUEST, "-w", ca_ws, "--yes", "--output", outbox)
    assert code == 0, err
    assert len(fingerprints(asked)) == 1 and fingerprints(asked) == fingerprints(answered)
    assert collaborators(ca_ws) == [NAME] and stat.S_IMODE(plan_file.stat().st_mode) == 0o444
    signed = members(outbox / SIGNED)
    assert set(signed) == {f"col_{NAME}.crt", "cert_chain.crt", "crl.pem"}  # with the CA's revocation list
    assert not any(b"PRIVATE KEY" in data for data in signed.values())

    code, out, err = fx(capsys, "collaborator", "certify", "--import", outbox / SIGNED, "-w", site_ws)
    assert code == 0, err
    site = CertLayout(site_ws / "cert")
    assert site.chain.read_bytes() == CertLayout(ca_ws / "cert").chain.read_bytes()
    assert load_pem_cert(site.collaborator_cert(NAME)).serial_number == int(re.search(r"serial ([0-9a-f]+)", out)[1], 16)
    check_own_certificate(site.cert_dir, "collaborator", NAME)
    assert not list(site_ws.glob("cert/ca/**/*"))
    assert site.crl.read_bytes() == CertLayout(ca_ws / "cert").crl.read_bytes()
    assert "revocation list number 1 (0 revoked" in out and "installed" in out

    code, again, _ = fx(capsys, "collaborator", "certify", "--request-pkg", outbox / REQUEST, "-w", ca_ws, "--yes", "--output", outbox)
    assert code == 0 and f"{NAME} already holds certificate" in again and "already in the collaborators" in again


def _rezip(package: Path, contents: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(package, "w") as zf:
        for name, data in contents.items():
            zf.writestr(name, data)
    return package


def _other_csr(tmp_path: Path, name: str) -> bytes:
    csr_path, _ = generate_csr(tmp_path / "elsewhere", "collaborator", name)
    return csr_path.read_bytes()


TAMPERINGS = {
    "csr swapped": (lambda c, t: {**c, f"col_{NAME}.csr": _other_csr(t, NAME)}, "altered or damaged"),
    "name changed": (
        lambda c, t: {
            "col_mallory.csr": c[f"col_{NAME}.csr"],
            "manifest.json": json.dumps({**json.loads(c["manifest.json"]), "name": "mallory"}).encode(),
        },
        f"its CSR asks for '{NAME}'",
    ),
    "key included": (lambda c, t: {**c, f"col_{NAME}.key": b"-----BEGIN PRIVATE KEY-----\n"}, "contains a private key"),
    "extra member": (lambda c, t: {**c, "notes.txt": b"hi"}, "expected exactly"),
    "path member": (lambda c, t: {"../manifest.json": c["manifest.json"]}, "unexpected entry"),
    "oversize member": (lambda c, t: {**c, f"col_{NAME}.csr": b"x" * (64 * 1024 + 1)}, "larger than 65536 bytes"),
    "manifest missing": (lambda c, t: {f"col_{NAME}.csr": c[f"col_{NAME}.csr"]}, "no readable manifest.json"),
}


@pytest.mark.parametrize("tampering", sorted(TAMPERINGS))
def test_a_tampered_request_package_is_refused(tampering: str, ca_ws: Path, site_ws: Path, tmp_path: Path, capsys) -> None:
    outbox = tmp_path / "outbox"
    request(capsys, site_ws, outbox, "--data-path", "1")
    change, message = TAMPERINGS[tampering]
    package = _rezip(outbox / REQUEST, change(members(outbox / REQUEST), tmp_path))
    index = CertLayout(ca_ws / "cert").index.read_text()
    code, _, err = fx(capsys, "collaborator", "certify", "--request-pkg", package, "-w", ca_ws, "--yes", "--output", outbox)
    assert code == 2 and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert CertLayout(ca_ws / "cert").index.read_text() == index  # nothing signed
    assert collaborators(ca_ws) == [] and not (outbox / SIGNED).exists()


def test_not_a_zip_is_refused(ca_ws: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / REQUEST).write_text("hello")
    code, _, err = fx(capsys, "collaborator", "certify", "--request-pkg", tmp_path / REQUEST, "-w", ca_ws, "--yes")
    assert code == 2 and "not a readable zip package" in err


def test_an_import_must_answer_this_sites_own_key(ca_ws: Path, site_ws: Path, tmp_path: Path, capsys) -> None:
    outbox, other_outbox = tmp_path / "outbox", tmp_path / "other-outbox"
    request(capsys, site_ws, outbox, "--data-path", "1")
    impostor = create_workspace(tmp_path / "impostor", "torch_digits")
    request(capsys, impostor, other_outbox, "--data-path", "1")  # the same name, another key
    fx(capsys, "collaborator", "certify", "--request-pkg", other_outbox / REQUEST, "-w", ca_ws, "--yes", "--output", other_outbox)
    code, _, err = fx(capsys, "collaborator", "certify", "--import", other_outbox / SIGNED, "-w", site_ws)
    assert code == 2 and "does not match this workspace's private key" in err
    assert not CertLayout(site_ws / "cert").collaborator_cert(NAME).exists()

    keyless = create_workspace(tmp_path / "keyless", "torch_digits")
    code, _, err = fx(capsys, "collaborator", "certify", "--import", other_outbox / SIGNED, "-w", keyless)
    assert code == 2 and "has no private key" in err

    # the right certificate with another CA's chain: not trusted
    fx(capsys, "collaborator", "certify", "--request-pkg", outbox / REQUEST, "-w", ca_ws, "--yes", "--output", outbox)
    create_ca(tmp_path / "other-ca")
    contents = members(outbox / SIGNED)
    _rezip(outbox / SIGNED, {**contents, "cert_chain.crt": CertLayout(tmp_path / "other-ca").chain.read_bytes()})
    code, _, err = fx(capsys, "collaborator", "certify", "--import", outbox / SIGNED, "-w", site_ws)
    assert code == 2 and "not issued by the federation's CA" in err


def test_certify_needs_exactly_one_package(ca_ws: Path, capsys) -> None:
    code, _, err = fx(capsys, "collaborator", "certify", "-w", ca_ws)
    assert code == 2 and "exactly one of --request-pkg" in err


# -- revocation and the list of certificates ----------------------------------------------------------


def test_revoke_and_list_certificates(ca_ws: Path, capsys) -> None:
    cert_dir = ca_ws / "cert"
    certify(cert_dir, "collaborator", NAME)
    certify(cert_dir, "collaborator", "old", now=dt.datetime.now(dt.UTC) - dt.timedelta(days=400))
    serial = format(load_pem_cert(CertLayout(cert_dir).collaborator_cert(NAME)).serial_number, "x")
    code, out, _ = fx(capsys, "workspace", "certificates", "-w", ca_ws)
    rows = {line.split()[1]: line.split() for line in out.splitlines()[1:] if len(line.split()) == 5}
    assert code == 0 and rows[NAME][0] == serial and rows[NAME][2] == "collaborator" and rows[NAME][4] == "valid"
    assert rows["old"][4] == "expired" and "root" in out and "signing" in out

    code, out, _ = fx(capsys, "workspace", "revoke", NAME, "-w", ca_ws, "--reason", "laptop stolen")
    assert code == 0 and serial in out
    code, out, _ = fx(capsys, "workspace", "certificates", "-w", ca_ws)
    assert next(line for line in out.splitlines() if line.startswith(serial)).endswith("revoked")
    code, _, err = fx(capsys, "workspace", "revoke", "nobody", "-w", ca_ws)
    assert code == 2 and "nobody" in err


# -- a site's own certificate, checked before connecting ------------------------------------------------


def test_own_certificate_check_names_the_file_and_the_fix(ca_ws: Path, tmp_path: Path) -> None:
    cert_dir = ca_ws / "cert"
    layout = CertLayout(cert_dir)
    certify(cert_dir, "collaborator", NAME, days=1, now=dt.datetime.now(dt.UTC) - dt.timedelta(days=10))
    expired = rf"certificate cert/client/col_{NAME}.crt expired on .*fx collaborator generate-cert-request -n {NAME}, then fx collaborator certify"
    with pytest.raises(PKIError, match=expired):
        check_own_certificate(cert_dir, "collaborator", NAME, ca_ws)

    create_ca(tmp_path / "other")
    foreign, _ = certify(tmp_path / "other", "collaborator", NAME)
    layout.collaborator_cert(NAME).write_bytes(foreign.read_bytes())
    with pytest.raises(PKIError, match=r"was not issued by the federation's CA in cert/cert_chain.crt"):
        check_own_certificate(cert_dir, "collaborator", NAME, ca_ws)

    certify(cert_dir, "collaborator", "other")
    layout.collaborator_cert(NAME).write_bytes(layout.collaborator_cert("other").read_bytes())
    with pytest.raises(PKIError, match=r"does not match the private key"):
        check_own_certificate(cert_dir, "collaborator", NAME, ca_ws)


# -- help reads as a guide ------------------------------------------------------------------------------


def test_help_lists_the_operators_steps_in_order(capsys) -> None:
    code, out, _ = fx(capsys, "--help")
    steps = [
        "fx workspace create", "fx plan initialize", "fx workspace certify", "fx aggregator generate-cert-request",
        "fx aggregator certify", "fx workspace export", "fx workspace import", "fx collaborator generate-cert-request",
        "certify --request-pkg", "certify --import", "fx aggregator start",
    ]
    positions = [out.index(step) for step in steps]
    assert code == 0 and positions == sorted(positions)
    for group in ("aggregator", "collaborator"):
        code, out, _ = fx(capsys, group, "--help")
        listed = out[out.index("Commands:"):]
        assert listed.index("generate-cert-request") < listed.index("certify") < listed.index("start")
