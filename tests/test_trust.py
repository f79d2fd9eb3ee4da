"""The pieces behind "a site runs only what its operator approved": allowed templates, plan
paths, the workspace hash, the private-key detector and the CA's revocation list."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import logging
import re
import tarfile
import tempfile
import zipfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from accord.errors import PKIError, PlanError
from accord.pki import load_pem_cert, make_federation_pki, revoke
from accord.pki.crl import check_aggregator_certificate, install_crl, installed_crl, write_crl
from accord.pki.secrets import private_key_problem
from accord.plan.identity import shown_hash, workspace_hash
from accord.plan.loader import validate_plan
from accord.plan.objects import build
from accord.plan.templates import ACCORD_TEMPLATES, template_problem


@pytest.mark.parametrize(
    "section, template",
    [
        ("task_runner", "os.system"),
        ("task_runner", "subprocess.run"),
        ("task_runner", "numpy.load"),
        ("task_runner", "accord.cli.main.main"),  # Accord's, but not a task runner
        ("data_loader", "accord.runners.torch_runner.TorchTaskRunner"),  # a runner, not a loader
        ("assigner", "src"),
        ("assigner", "src.Assigner"),  # a module is needed: src.module.Class
        ("task_runner", "src/../x.Runner"),
        ("task_runner", "src..x.Runner"),
        ("task_runner", "src.x.Ru nner"),
        ("task_runner", "src.x.Rünner"),
        ("aggregator", "accord.aggregator.runtime.AggregatorRuntime"),  # nothing is built from it
    ],
)
def test_only_accords_own_templates_of_the_right_kind_or_the_workspaces_src(section: str, template: str) -> None:
    assert template_problem(section, template) is not None


def test_every_listed_accord_template_exists_and_src_ones_are_allowed() -> None:
    from accord.imports import import_dotted

    for section, names in ACCORD_TEMPLATES.items():
        for name in names:
            if "keras" not in name:  # importing keras is slow; its runner is exercised elsewhere
                assert callable(import_dotted(name, section))
    assert template_problem("task_runner", "src.runners.jax.JaxRunner") is None


def test_a_plan_with_a_foreign_template_fails_to_load_with_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(PlanError) as refused:
        validate_plan({"assigner": {"template": "os.system"}}, tmp_path, source="plan.yaml")
    text = str(refused.value)
    assert "plan.yaml: assigner.template" in text and "'os.system' is not allowed" in text and "\n" not in text


def test_build_checks_the_template_and_the_module_file_before_importing(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "elsewhere.py").write_text("raise SystemExit('imported')\n")
    with pytest.raises(PlanError, match="not allowed"):
        build("task_runner", "elsewhere.Runner", {}, tmp_path)
    with pytest.raises(PlanError, match="is not a file of the workspace's src package"):
        build("task_runner", "src.missing.Runner", {}, tmp_path)
    outside = tmp_path.parent / f"{tmp_path.name}-outside.py"
    outside.write_text("raise SystemExit('imported')\n")
    (tmp_path / "src" / "linked.py").symlink_to(outside)  # a module file that leads out of src/
    with pytest.raises(PlanError, match="is not a file of the workspace's src package"):
        build("task_runner", "src.linked.Runner", {}, tmp_path)


def test_a_built_assigner_must_follow_the_protocol(tmp_path: Path) -> None:
    from accord.aggregator.assigner import Assigner

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "__init__.py").write_text("")
    (tmp_path / "src" / "assign.py").write_text("class Nope:\n    def __init__(self, collaborators):\n        pass\n")
    with pytest.raises(PlanError, match=r"src.assign.Nope built a Nope, which is not a Assigner: it lacks tasks_for"):
        build("assigner", "src.assign.Nope", {}, tmp_path, expect=Assigner, collaborators=["a"])


@pytest.mark.parametrize(
    "key", ["aggregator.settings.state_dir", "aggregator.settings.best_state_path", "network.settings.cert_dir",
            "collaborator.settings.data_config_path"]
)
@pytest.mark.parametrize("value", ["../x", "/etc/x", "save/../../x"])
def test_plan_paths_stay_inside_the_workspace(tmp_path: Path, key: str, value: str) -> None:
    section, settings, name = key.split(".")
    with pytest.raises(PlanError, match=f"{key} is .* which leads outside the workspace"):
        validate_plan({section: {settings: {name: value}}}, tmp_path)


def test_an_absolute_path_inside_the_workspace_is_fine(tmp_path: Path) -> None:
    plan = validate_plan({"aggregator": {"settings": {"state_dir": str(tmp_path / "state")}}}, tmp_path)
    assert plan.resolve_path(plan.model.aggregator.settings.state_dir) == (tmp_path / "state").resolve()


def test_the_workspace_hash_covers_the_plan_code_and_requirements_only(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir(parents=True)
    (tmp_path / "src" / "model.py").write_text("x = 1\n")
    first = workspace_hash("p" * 96, tmp_path)
    (tmp_path / "save").mkdir()
    (tmp_path / "save" / "last.safetensors").write_bytes(b"weights")
    assert workspace_hash("p" * 96, tmp_path) == first  # models: not code
    assert workspace_hash("q" * 96, tmp_path) != first
    (tmp_path / "requirements.txt").write_text("torch\n")
    second = workspace_hash("p" * 96, tmp_path)
    assert second != first
    (tmp_path / "src" / "model.py").write_text("x = 2\n")
    assert workspace_hash("p" * 96, tmp_path) not in (first, second)
    (tmp_path / "src" / "link.py").symlink_to(tmp_path / "src" / "model.py")
    with pytest.raises(Exception, match="symbolic link"):
        workspace_hash("p" * 96, tmp_path)
    (tmp_path / "src" / "link.py").unlink()
    for planted in ("__pycache__/model.cpython-311.pyc", "model.pyc", "ext.abi3.so", "ext.pyd", "hook.pth"):
        (tmp_path / "src" / planted).parent.mkdir(exist_ok=True)
        (tmp_path / "src" / planted).write_bytes(b"compiled")
        with pytest.raises(Exception, match="the workspace hash does not cover it"):
            workspace_hash("p" * 96, tmp_path)  # code Python runs without its source: refused, not skipped
        (tmp_path / "src" / planted).unlink()
        if (tmp_path / "src" / "__pycache__").is_dir():
            (tmp_path / "src" / "__pycache__").rmdir()
    assert workspace_hash("p" * 96, tmp_path) not in (first, second)


def test_a_peers_hash_is_quoted_only_when_it_is_one() -> None:
    assert shown_hash("a" * 96) == "a" * 16 + "..."
    assert shown_hash("") == "(none)" and shown_hash("x\nforged line") == "(not a SHA-384 hash)"


# -- private keys in any encoding ----------------------------------------------------------------------


def _keys() -> dict[str, bytes]:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    enc = serialization.BestAvailableEncryption(b"secret")
    none = serialization.NoEncryption()
    der, pem, pkcs8, trad = (serialization.Encoding.DER, serialization.Encoding.PEM,
                             serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL)
    return {
        "pem pkcs8": ec_key.private_bytes(pem, pkcs8, none),
        "pem encrypted": ec_key.private_bytes(pem, pkcs8, enc),
        "pem traditional": rsa_key.private_bytes(pem, trad, none),
        "openssh": ec_key.private_bytes(pem, serialization.PrivateFormat.OpenSSH, none),
        "der pkcs8": ec_key.private_bytes(der, pkcs8, none),
        "der encrypted": rsa_key.private_bytes(der, pkcs8, enc),
        "der traditional": rsa_key.private_bytes(der, trad, none),
    }


def _tar_of(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tf:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _zip_of(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name, data)
    return buffer.getvalue()


def test_the_detector_finds_keys_in_every_encoding_and_nested_archive() -> None:
    for label, data in _keys().items():
        assert private_key_problem(data), label
        assert "in its member 'k'" in private_key_problem(_zip_of("k", data)), label
        assert private_key_problem(_tar_of("k", data)), label  # a plain tar may show the PEM text as it is
        assert private_key_problem(gzip.compress(_tar_of("k", data))), label
    der = _keys()["der pkcs8"]
    assert private_key_problem(_zip_of("a", _zip_of("b", der))).endswith("in its member 'b', in its member 'a'")
    deep = der
    for level in range(5):
        deep = _zip_of(f"l{level}", deep)
    assert "too large, deep or damaged" in private_key_problem(deep)


def test_the_detector_finds_pkcs12_base64_jwk_and_appended_keys() -> None:
    import base64
    import textwrap

    from cryptography.hazmat.primitives.serialization import pkcs12

    key = ec.generate_private_key(ec.SECP256R1())
    der = _keys()["der traditional"]
    bundle = {
        "plain": pkcs12.serialize_key_and_certificates(b"n", key, None, None, serialization.NoEncryption()),
        "encrypted": pkcs12.serialize_key_and_certificates(b"n", key, None, None, serialization.BestAvailableEncryption(b"pw")),
    }
    b64 = base64.b64encode(der).decode()
    cases = {
        "pkcs12 plain (src/bundle.bin)": (bundle["plain"], "PKCS#12|private key"),
        "pkcs12 encrypted": (bundle["encrypted"], "PKCS#12|private key"),
        "base64 DER in a .py": (f'KEY = "{b64}"\n'.encode(), "base64"),
        "base64 DER, wrapped lines": (('KEY = """\n' + "\n".join(textwrap.wrap(b64, 64)) + '\n"""\n').encode(), "base64"),
        "base64 url-safe DER": (f"k = '{base64.urlsafe_b64encode(der).decode()}'\n".encode(), "base64"),
        "base64 PKCS#12": (base64.b64encode(bundle["encrypted"]), "base64"),
        "DER appended": (b"\x89PNG\r\n" + bytes(range(256)) * 40 + der, "DER"),
        "JWK": (b'{"kty": "EC", "crv": "P-256", "x": "f83O", "y": "x_FE", "d": "jpsQ"}', "JWK"),
        "JWK, d first": (b"jwk = {'d': 'jpsQ', 'kty': 'OKP'}", "JWK"),
    }
    for label, (data, why) in cases.items():
        found = private_key_problem(data)
        assert found and re.search(why, found), (label, found)


def test_the_detector_lets_ordinary_files_through() -> None:
    import numpy as np

    cert = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    npz = io.BytesIO()
    np.savez(npz, x=np.arange(10))
    import base64

    from cryptography.hazmat.primitives.serialization import pkcs12

    real_cert = load_pem_cert(make_federation_pki(Path(tempfile.mkdtemp()) / "ca", "localhost", []).root_cert)
    cert_der = real_cert.public_bytes(serialization.Encoding.DER)
    certs_only = pkcs12.serialize_key_and_certificates(None, None, None, [real_cert], serialization.NoEncryption())
    public_jwk = b'{"kty": "EC", "crv": "P-256", "x": "f83O", "y": "x_FE"}'
    ordinary = (
        b"", b"print('hello')\n", cert, b"\x30\x03\x02\x01\x01", npz.getvalue(), _zip_of("a.py", b"x = 1\n"),
        cert_der, base64.b64encode(cert_der) * 3, certs_only, public_jwk, b"if jwk['d']:\n    kty = jwk['kty']\n",
        np.random.default_rng(0).bytes(1 << 20), ("A" * 5000).encode(),
    )
    for data in ordinary:
        assert private_key_problem(data) is None, data[:60]


# -- the revocation list -----------------------------------------------------------------------------


def test_a_crl_due_for_renewal_is_warned_of_once_per_process_not_at_every_check(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A site checks the aggregator's certificate against its CRL every round with a large model."""
    from accord.pki import crl

    ca = make_federation_pki(tmp_path / "ca", "localhost", ["alice"])
    written = write_crl(ca.cert_dir, days=1)
    assert written.next_update is not None
    monkeypatch.setattr(crl, "utc_now", lambda: written.next_update + dt.timedelta(days=1))  # two days on: due
    with caplog.at_level(logging.WARNING, logger="accord"):
        for _ in range(3):
            assert installed_crl(ca.cert_dir) is not None
    assert caplog.text.count("was due for renewal") == 1


def test_the_crl_is_signed_by_the_signing_ca_and_never_goes_back(tmp_path: Path) -> None:
    ca = make_federation_pki(tmp_path / "ca", "localhost", ["alice"])
    site = tmp_path / "site"
    site.mkdir()
    (site / "cert_chain.crt").write_bytes(ca.chain.read_bytes())
    first = write_crl(ca.cert_dir)
    assert first.number == 1 and not first.serials
    revoke(ca.cert_dir, "localhost")
    second = write_crl(ca.cert_dir)
    aggregator = load_pem_cert(ca.aggregator_cert("localhost"))
    assert second.number == 2 and second.serials == {aggregator.serial_number}

    held, replaced = install_crl(site, second.pem, "crl.pem")
    assert replaced and held.number == 2 and installed_crl(site).serials == second.serials
    assert install_crl(site, second.pem, "crl.pem")[1] is False  # the same one: nothing to do
    with pytest.raises(PKIError, match="is not newer than the one held"):
        install_crl(site, first.pem, "old.pem")
    assert install_crl(site, first.pem, "package", keep_newer=True) == (held, False)  # a package's older one
    other = make_federation_pki(tmp_path / "other", "localhost", [])
    with pytest.raises(PKIError, match="not signed by this federation's signing CA"):
        install_crl(site, write_crl(other.cert_dir).pem, "foreign.pem")
    with pytest.raises(PKIError, match=r"is not an X.509 CRL"):
        install_crl(site, b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n", "junk.pem")

    der = aggregator.public_bytes(serialization.Encoding.DER)
    with pytest.raises(PKIError, match=f"serial {aggregator.serial_number:x}, which the CA revoked"):
        check_aggregator_certificate(der, site, "localhost:1")
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "cert_chain.crt").write_bytes(ca.chain.read_bytes())
    check_aggregator_certificate(der, fresh, "localhost:1")  # no CRL held yet: the chain's word stands
