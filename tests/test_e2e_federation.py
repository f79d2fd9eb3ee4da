"""End to end: the aggregator and collaborators as separate `fx` processes over mutual TLS."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import FAST

from accord.experiment.local import fx_command, prepare_workspace, run_processes
from accord.pki import certify, create_ca
from accord.pki.layout import CertLayout

pytestmark = pytest.mark.e2e


def test_quickstart_federation_over_mutual_tls(tmp_path: Path) -> None:
    plan = prepare_workspace(tmp_path / "ws", collaborators=2, rounds=2, overrides=FAST)
    lines: list[str] = []
    report = run_processes(plan, on_line=lines.append, timeout=300)
    assert report.ok, (report.returncodes, (plan.workspace / "logs" / "collaborator1.log").read_text())
    accuracy = report.aggregated("aggregated_model_validation/accuracy")
    assert len(accuracy) == 3  # two training rounds, then the last model's validation
    assert accuracy[-1] > accuracy[0]
    settings = plan.model.aggregator.settings
    for path in (settings.init_state_path, settings.best_state_path, settings.last_state_path):
        assert plan.resolve_path(path).is_file()
    sites = {r.origin for r in report.records}
    assert sites == {"aggregator", "collaborator1", "collaborator2"}
    assert any("collaborator1" in line and "train" in line for line in lines)
    assert any("final validation of the last model done" in line for line in lines)


def start_collaborator(workspace: Path, name: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        fx_command("collaborator", "start", "-n", name, "-w", str(workspace), "--connect-timeout", "5", *extra),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_refusals_then_the_federation_completes(tmp_path: Path) -> None:
    """Wrong plan hash, a certificate whose name differs, a name not in the plan, a foreign CA."""
    plan = prepare_workspace(tmp_path / "ws", collaborators=1, rounds=1, overrides=FAST)
    ws = plan.workspace
    layout = CertLayout(ws / "cert")
    aggregator = subprocess.Popen(
        fx_command("aggregator", "start", "-w", str(ws)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        hashed = start_collaborator(ws, "collaborator1", "-o", "aggregator.settings.rounds_to_train=3")
        assert hashed.returncode == 2
        assert "plans differ" in hashed.stderr

        # a site holding mallory's (validly signed) certificate, claiming to be collaborator1
        certify(ws / "cert", "collaborator", "mallory")
        impostor = tmp_path / "impostor"
        shutil.copytree(ws, impostor)
        impostor_layout = CertLayout(impostor / "cert")
        shutil.copy(layout.collaborator_cert("mallory"), impostor_layout.collaborator_cert("collaborator1"))
        shutil.copy(layout.collaborator_key("mallory"), impostor_layout.collaborator_key("collaborator1"))
        claimed = start_collaborator(impostor, "collaborator1")
        assert claimed.returncode == 2
        # the certificate is checked as the call arrives, before the name its request claims is read
        # (a listed certificate claiming another name: tests/test_e2e_floods.py)
        assert "collaborator 'mallory' is not in the plan" in claimed.stderr

        # mallory under its own name: signed by the CA, but not in the plan
        (impostor / "plan" / "data.yaml").write_text(yaml.safe_dump({"mallory": 1}))
        unlisted = start_collaborator(impostor, "mallory")
        assert unlisted.returncode == 2
        assert "not in the plan" in unlisted.stderr

        # a certificate from another CA would not finish the TLS handshake: the site says so first
        foreign = tmp_path / "foreign"
        shutil.copytree(ws, foreign)
        create_ca(tmp_path / "other-ca")
        cert, key = certify(tmp_path / "other-ca", "collaborator", "collaborator1")
        shutil.copy(cert, CertLayout(foreign / "cert").collaborator_cert("collaborator1"))
        shutil.copy(key, CertLayout(foreign / "cert").collaborator_key("collaborator1"))
        stranger = start_collaborator(foreign, "collaborator1")
        assert stranger.returncode == 2
        assert "certificate cert/client/col_collaborator1.crt was not issued by the federation's CA" in stranger.stderr

        honest = start_collaborator(ws, "collaborator1")
        assert honest.returncode == 0, honest.stdout + honest.stderr
        out, _ = aggregator.communicate(timeout=60)
    finally:
        if aggregator.poll() is None:
            aggregator.kill()
    assert aggregator.returncode == 0, out
    assert "federation finished" in out
    for reason in ("plans differ", "refused mallory: collaborator 'mallory' is not in the plan"):
        assert reason in out, f"aggregator did not log a refusal: {reason}"
