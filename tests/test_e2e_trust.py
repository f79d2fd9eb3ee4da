"""What a site runs is what its operator approved, and revocation works both ways: with real
`fx` processes over mutual TLS, each refusal seen from both sides."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import time
import zipfile
from pathlib import Path

import pytest
from conftest import FAST
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from accord.experiment.local import free_port, fx_command, prepare_workspace
from accord.messages import FederationInfo
from accord.pki import load_pem_cert
from accord.pki.layout import CertLayout
from accord.plan.loader import Plan, load_plan, read_yaml, update_plan_file

pytestmark = pytest.mark.e2e


def fx(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(fx_command(*args), capture_output=True, text=True, timeout=timeout)


def refused_in_one_line(done: subprocess.CompletedProcess) -> str:
    """The one line a refused command prints: exit 2, no traceback."""
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    return lines[0]


def start_aggregator(plan: Plan, log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        proc = subprocess.Popen(
            fx_command("aggregator", "start", "-w", str(plan.workspace)),
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    deadline = time.monotonic() + 90
    while True:
        try:
            socket.create_connection(("localhost", plan.model.network.settings.agg_port), timeout=1.0).close()
            return proc
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)


def stop(proc: subprocess.Popen, timeout: float = 60) -> None:
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def site_copy(plan: Plan, where: Path) -> Plan:
    """Another site's workspace: the same files (plan, code, its certificate), in its own folder."""
    shutil.copytree(plan.workspace, where, ignore=shutil.ignore_patterns("ca", "__pycache__"))
    return load_plan(where / "plan" / "plan.yaml", workspace=where)


# -- the workspace hash, checked both ways at Join ------------------------------------------------


def test_a_site_with_a_tampered_src_file_is_refused_at_join(tmp_path: Path) -> None:
    plan = prepare_workspace(tmp_path / "ws", collaborators=1, rounds=1, overrides=FAST)
    site = site_copy(plan, tmp_path / "site")
    model = site.workspace / "src" / "model.py"
    model.write_text(model.read_text() + "\nimport os  # an edit nobody approved\n")
    ours, theirs = plan.workspace_hash(), site.workspace_hash()
    assert ours != theirs and site.hash == plan.hash  # same plan, other code

    log = tmp_path / "aggregator.log"
    aggregator = start_aggregator(plan, log)
    try:
        tampered = fx("collaborator", "start", "-n", "collaborator1", "-w", str(site.workspace), "--connect-timeout", "30")
        line = refused_in_one_line(tampered)
        assert "workspace hash" in line and theirs[:16] in line and ours[:16] in line and "fx workspace import" in line
        honest = fx("collaborator", "start", "-n", "collaborator1", "-w", str(plan.workspace), timeout=240)
        assert honest.returncode == 0, honest.stdout + honest.stderr
    finally:
        stop(aggregator)
    out = log.read_text()
    assert aggregator.returncode == 0, out
    refusals = [line for line in out.splitlines() if "refused collaborator1 at join" in line]
    assert len(refusals) == 1 and theirs[:16] in refusals[0] and ours[:16] in refusals[0], out
    assert "federation finished" in out


class _Impostor:
    """An aggregator that serves the real runtime but answers Join with other hashes."""

    def __init__(self, runtime, plan_hash: str, workspace_hash: str) -> None:
        self._runtime = runtime
        self._answer = (plan_hash, workspace_hash)
        self.calls: list[str] = []

    def join(self, collaborator: str, plan_hash: str, workspace_hash: str | None = None) -> FederationInfo:
        self.calls.append("join")
        return FederationInfo(self._answer[0], 1, 0, self._answer[1])

    def __getattr__(self, name: str):
        self.calls.append(name)
        return getattr(self._runtime, name)


@pytest.mark.parametrize("differs", ["workspace", "plan"])
def test_a_site_refuses_an_aggregator_that_names_another_workspace_or_plan(tmp_path: Path, differs: str) -> None:
    from accord.aggregator.runtime import AggregatorRuntime
    from accord.transport.grpc_server import GrpcAggregatorServer
    from accord.transport.tls import ServerTLS

    plan = prepare_workspace(tmp_path / "ws", collaborators=1, rounds=1, overrides=FAST)
    runtime = AggregatorRuntime(plan)
    other = "ab" * 48
    impostor = _Impostor(
        runtime, other if differs == "plan" else plan.hash, other if differs == "workspace" else runtime.workspace_hash
    )
    layout = CertLayout(plan.workspace / "cert")
    tls = ServerTLS(layout.aggregator_cert("localhost"), layout.aggregator_key("localhost"), layout.chain)
    server = GrpcAggregatorServer(impostor, "localhost", plan.model.network.settings.agg_port, tls)
    server.start()
    try:
        done = fx("collaborator", "start", "-n", "collaborator1", "-w", str(plan.workspace), "--connect-timeout", "30")
    finally:
        server.stop(0)
        runtime.close()
    line = refused_in_one_line(done)
    assert "refusing to work for it" in line and other[:16] in line, line
    assert (plan.hash if differs == "plan" else runtime.workspace_hash)[:16] in line
    assert "join" in impostor.calls
    asked = {"get_tasks", "poll_tasks", "get_model", "expect", "submit", "upload_slot"} & set(impostor.calls)
    assert not asked, asked  # the site asked for no task and sent nothing


# -- templates and paths, refused when the plan loads ----------------------------------------------

MARKER_MODULE = "from pathlib import Path\nPath(__file__).with_name('IMPORTED').touch()\nsystem = print\n"


@pytest.mark.parametrize(
    "key, value",
    [
        *(("task_runner.template", t) for t in ("os.system", "subprocess.run", "evil.system", "src/../evil.system")),
        ("task_runner.settings.model", "os.system"),
        ("task_runner.settings.model", "evil.system"),
        ("task_runner.settings.loss", "subprocess.run"),
        ("data_loader.settings.interface", "evil.system"),
    ],
)
def test_a_plan_naming_foreign_code_is_refused_by_every_command_before_any_import(tmp_path: Path, key: str, value: str) -> None:
    plan = prepare_workspace(tmp_path / "ws", collaborators=1, rounds=1, overrides=FAST)
    ws = plan.workspace
    (ws / "evil.py").write_text(MARKER_MODULE)  # importable from the workspace root: it must never be
    (ws / "plan" / "plan.yaml").chmod(0o644)
    update_plan_file(plan.path, {key: value})
    for command in (
        ("plan", "initialize", "-w", str(ws), "-a", "localhost"),
        ("aggregator", "start", "-w", str(ws)),
        ("collaborator", "start", "-n", "collaborator1", "-w", str(ws)),
    ):
        line = refused_in_one_line(fx(*command))
        assert key in line and "not allowed" in line and repr(value) in line, line
    assert not (ws / "IMPORTED").exists()


def test_a_workspace_class_that_is_no_task_runner_is_named_with_what_it_lacks(tmp_path: Path) -> None:
    plan = prepare_workspace(tmp_path / "ws", collaborators=1, rounds=1, overrides=FAST)
    (plan.workspace / "src" / "half.py").write_text("class Runner:\n    def __init__(self, **kw):\n        pass\n")
    update_plan_file(plan.path, {"task_runner.template": "src.half.Runner"})
    line = refused_in_one_line(fx("plan", "initialize", "-w", str(plan.workspace), "-a", "localhost"))
    assert "src.half.Runner" in line and "TaskRunner" in line and "get_weights" in line and "train" in line, line


def test_a_plan_path_leading_outside_the_workspace_is_refused(tmp_path: Path) -> None:
    plan = prepare_workspace(tmp_path / "ws", collaborators=1, rounds=1, overrides=FAST)
    ws = plan.workspace
    line = refused_in_one_line(fx("aggregator", "start", "-w", str(ws), "-o", "aggregator.settings.state_dir=../elsewhere"))
    assert "aggregator.settings.state_dir" in line and "outside the workspace" in line
    (tmp_path / "outside").mkdir()
    (ws / "logs_out").symlink_to(tmp_path / "outside")  # a symbolic link out counts as outside
    line = refused_in_one_line(
        fx("collaborator", "start", "-n", "collaborator1", "-w", str(ws), "-o", "aggregator.settings.metrics_path=logs_out/m.jsonl")
    )
    assert "aggregator.settings.metrics_path" in line and str(tmp_path / "outside") in line
    assert not list((tmp_path / "outside").iterdir()) and not (tmp_path / "elsewhere").exists()


# -- private keys in an archive, in any encoding ---------------------------------------------------


def _with_member(archive: Path, name: str, data: bytes, target: Path) -> Path:
    """A copy of an exported archive with one more file, listed in its manifest (a consistent archive)."""
    import hashlib

    with zipfile.ZipFile(archive) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    manifest = json.loads(members["manifest.json"])
    manifest["files"][name] = hashlib.sha256(data).hexdigest()
    members[name] = data
    members["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(target, "w") as zf:
        for member, content in members.items():
            zf.writestr(member, content)
    return target


def _zip_of(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:  # the key's text is not in plain sight
        zf.writestr(name, data)
    return buffer.getvalue()


def test_import_refuses_a_private_key_in_der_pkcs12_base64_or_inside_a_nested_archive(tmp_path: Path) -> None:
    import base64

    from cryptography.hazmat.primitives.serialization import pkcs12

    ws = tmp_path / "ws"
    assert fx("workspace", "create", "--prefix", str(ws), "--template", "torch_digits").returncode == 0
    exported = fx("workspace", "export", "-w", str(ws), "--output", str(tmp_path / "clean.zip"))
    assert exported.returncode == 0 and "workspace hash" in exported.stdout, exported.stderr
    key = ec.generate_private_key(ec.SECP384R1())
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    cases = {
        "src/weights.bin": (der, "private key (DER)"),
        "src/assets.zip": (_zip_of("inner/id.txt", pem), "private key (PEM), in its member 'inner/id.txt'"),
        "src/nested.zip": (_zip_of("deeper.zip", _zip_of("k", der)), "in its member 'deeper.zip'"),
        "src/bundle.bin": (
            pkcs12.serialize_key_and_certificates(b"k", key, None, None, serialization.BestAvailableEncryption(b"pw")),
            "PKCS#12 bundle that needs a password",
        ),
        "src/keys.py": (f"KEY = {base64.b64encode(der).decode()!r}\n".encode(), "base64 text that is a private key (DER)"),
    }
    for name, (data, why) in cases.items():
        archive = _with_member(tmp_path / "clean.zip", name, data, tmp_path / f"{Path(name).stem}.zip")
        target = tmp_path / f"site-{Path(name).stem}"
        line = refused_in_one_line(fx("workspace", "import", "--archive", str(archive), "--prefix", str(target)))
        assert name in line and why in line and "nothing was written" in line, line
        assert not target.exists()
    imported = fx("workspace", "import", "--archive", str(tmp_path / "clean.zip"), "--prefix", str(tmp_path / "site"))
    assert imported.returncode == 0, imported.stderr
    hashes = [line.split()[-1] for line in imported.stdout.splitlines() if line.startswith("workspace hash")]
    assert hashes and hashes[0] in exported.stdout  # both operators see the same workspace hash


# -- revocation of the aggregator, at the site ------------------------------------------------------


def test_a_site_holding_the_new_crl_refuses_a_revoked_aggregator(tmp_path: Path) -> None:
    plan = prepare_workspace(tmp_path / "ws", collaborators=1, rounds=1, overrides=FAST)
    site = site_copy(plan, tmp_path / "site")  # its own cert/ folder: no CRL yet
    serial = f"{load_pem_cert(CertLayout(plan.workspace / 'cert').aggregator_cert('localhost')).serial_number:x}"
    revoked = fx("workspace", "revoke", "localhost", "-w", str(plan.workspace), "--reason", "server stolen")
    assert revoked.returncode == 0 and serial in revoked.stdout and "crl.pem" in revoked.stdout, revoked.stderr
    crl = CertLayout(plan.workspace / "cert").crl
    installed = fx("collaborator", "update-crl", str(crl), "-w", str(site.workspace))
    assert installed.returncode == 0 and "1 revoked" in installed.stdout and "installed" in installed.stdout

    log = tmp_path / "aggregator.log"
    aggregator = start_aggregator(plan, log)  # the thief's aggregator: a revoked certificate, the right key
    try:
        line = refused_in_one_line(
            fx("collaborator", "start", "-n", "collaborator1", "-w", str(site.workspace), "--connect-timeout", "30")
        )
    finally:
        aggregator.terminate()
        stop(aggregator)
    assert f"serial {serial}" in line and "revoked" in line and "fx collaborator update-crl" in line, line
    out = log.read_text()
    assert "joined" not in out and "collaborator1" not in out, out  # nothing of the site reached it

    older = tmp_path / "older.pem"
    older.write_bytes(crl.read_bytes())
    assert fx("workspace", "revoke", "collaborator1", "-w", str(plan.workspace)).returncode == 0
    assert fx("collaborator", "update-crl", str(crl), "-w", str(site.workspace)).returncode == 0
    line = refused_in_one_line(fx("collaborator", "update-crl", str(older), "-w", str(site.workspace)))
    assert "is not newer" in line


# -- enrolment one site at a time ------------------------------------------------------------------


def test_a_plan_with_min_reports_2_enrols_its_sites_one_at_a_time(tmp_path: Path) -> None:
    agg, outbox = tmp_path / "agg", tmp_path / "outbox"
    outbox.mkdir()
    assert fx("workspace", "create", "--prefix", str(agg), "--template", "torch_digits").returncode == 0
    update_plan_file(
        agg / "plan" / "plan.yaml",
        {"network.settings.agg_port": free_port(), "straggler_handling_policy.settings.min_reports": 2, **FAST},
    )
    for step in (
        ("plan", "initialize", "-w", str(agg), "-a", "localhost"),
        ("workspace", "certify", "-w", str(agg)),
        ("aggregator", "generate-cert-request", "-w", str(agg), "--fqdn", "localhost"),
        ("aggregator", "certify", "-w", str(agg), "--fqdn", "localhost", "--yes"),
    ):
        done = fx(*step)
        assert done.returncode == 0, done.stdout + done.stderr
    for number, name in enumerate(("hospital1", "hospital2"), start=1):
        site = tmp_path / name
        assert fx("workspace", "create", "--prefix", str(site), "--template", "torch_digits").returncode == 0
        asked = fx("collaborator", "generate-cert-request", "-n", name, "-w", str(site), "--data-path", "1", "--output", str(outbox))
        assert asked.returncode == 0, asked.stderr
        package = outbox / f"col_{name}_to_agg_cert_request.zip"
        signed = fx("collaborator", "certify", "--request-pkg", str(package), "-w", str(agg), "--yes", "--output", str(outbox))
        assert signed.returncode == 0, signed.stdout + signed.stderr
        assert read_yaml(agg / "plan" / "plan.yaml")["collaborators"] == ["hospital1", "hospital2"][:number]
        if number == 1:  # one site is not enough for min_reports 2: the aggregator says so when it starts
            line = refused_in_one_line(fx("aggregator", "start", "-w", str(agg)))
            assert "min_reports is 2, but the plan lists only 1 collaborators" in line


# -- bytecode and compiled code: never outside the workspace hash -----------------------------------


EVIL_MODEL = "from pathlib import Path\nPath(__file__).resolve().parents[2].joinpath('EVIL_RAN').touch()\n"


def _unchecked_pyc(source: str, where: Path) -> bytes:
    """Bytecode of ``source`` in PEP 552's unchecked-hash mode: Python uses it without reading the .py."""
    import py_compile

    where.mkdir(parents=True, exist_ok=True)
    (where / "model.py").write_text(source)
    out = py_compile.compile(
        str(where / "model.py"), cfile=str(where / "model.pyc"), doraise=True,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )
    return Path(out).read_bytes()


def test_bytecode_beside_the_honest_source_is_refused_at_import_and_at_start_and_never_runs(tmp_path: Path) -> None:
    import sys

    plan = prepare_workspace(tmp_path / "ws", collaborators=1, rounds=1, overrides=FAST)
    exported = fx("workspace", "export", "-w", str(plan.workspace), "--output", str(tmp_path / "clean.zip"))
    assert exported.returncode == 0, exported.stderr
    tag = sys.implementation.cache_tag
    pyc_name = f"src/__pycache__/model.{tag}.pyc"
    pyc = _unchecked_pyc(EVIL_MODEL, tmp_path / "evil")
    crafted = _with_member(tmp_path / "clean.zip", pyc_name, pyc, tmp_path / "crafted.zip")
    line = refused_in_one_line(fx("workspace", "import", "--archive", str(crafted), "--prefix", str(tmp_path / "bad")))
    assert pyc_name in line and "__pycache__" in line and "nothing was written" in line, line
    assert not (tmp_path / "bad").exists()

    site = site_copy(plan, tmp_path / "site")  # an honest site, which then finds bytecode planted beside model.py
    (site.workspace / "src" / "__pycache__").mkdir(exist_ok=True)
    (site.workspace / pyc_name).write_bytes(pyc)
    line = refused_in_one_line(fx("collaborator", "start", "-n", "collaborator1", "-w", str(site.workspace), "--connect-timeout", "5"))
    assert "__pycache__" in line and "workspace hash does not cover it" in line and "delete it" in line, line
    line = refused_in_one_line(fx("aggregator", "start", "-w", str(site.workspace)))
    assert "__pycache__" in line, line
    assert not (site.workspace / "EVIL_RAN").exists()
