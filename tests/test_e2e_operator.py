"""The operator's path with the fx CLI alone: an aggregator site and two collaborator sites,
each in its own directory, sharing only the files they choose to send."""

from __future__ import annotations

import re
import subprocess
import zipfile
from pathlib import Path

import pytest
from conftest import FAST

from accord.experiment.local import free_port, fx_command
from accord.plan.loader import update_plan_file

pytestmark = pytest.mark.e2e


def fx(*args: str) -> str:
    done = subprocess.run(fx_command(*args), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"fx {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def fingerprints(text: str) -> set[str]:
    """The SHA-384 fingerprints printed (not the plan or workspace hashes)."""
    return set(re.findall(r"fingerprint \(SHA-384\): ([0-9a-f]{96})\b", text))


def test_three_sites_federate_with_the_cli_alone(tmp_path: Path) -> None:
    agg, outbox = tmp_path / "aggregator-site", tmp_path / "outbox"
    outbox.mkdir()
    fx("workspace", "create", "--prefix", str(agg), "--template", "torch_digits")
    # the operator edits the plan: two sites, a small model, two rounds, a free port
    update_plan_file(
        agg / "plan" / "plan.yaml",
        {
            "aggregator.settings.rounds_to_train": 2,
            "data_loader.settings.collaborator_count": 2,
            "network.settings.agg_port": free_port(),
            **FAST,
        },
    )
    fx("plan", "initialize", "-w", str(agg), "-a", "localhost")
    fx("workspace", "certify", "-w", str(agg))
    request = fx("aggregator", "generate-cert-request", "-w", str(agg), "--fqdn", "localhost")
    signed = fx("aggregator", "certify", "-w", str(agg), "--fqdn", "localhost", "--yes")
    assert fingerprints(request) and fingerprints(request) <= fingerprints(signed)
    fx("plan", "freeze", "-w", str(agg))
    archive = outbox / "workspace.zip"
    fx("workspace", "export", "-w", str(agg), "--output", str(archive))
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
    assert not [n for n in names if n.startswith(("cert/", "data/", "save/", "logs/")) or n.endswith(".key")]
    for name in names:
        with zipfile.ZipFile(archive) as zf:
            assert b"PRIVATE KEY" not in zf.read(name)

    sites = {"hospital1": tmp_path / "site1", "hospital2": tmp_path / "site2"}
    for shard, (name, site) in enumerate(sites.items(), start=1):
        fx("workspace", "import", "--archive", str(archive), "--prefix", str(site))
        asked = fx("collaborator", "generate-cert-request", "-n", name, "-w", str(site), "--data-path", str(shard), "--output", str(outbox))
        package = outbox / f"col_{name}_to_agg_cert_request.zip"
        answered = fx("collaborator", "certify", "--request-pkg", str(package), "-w", str(agg), "--yes", "--output", str(outbox))
        assert fingerprints(asked) and fingerprints(asked) == fingerprints(answered)
        fx("collaborator", "certify", "--import", str(outbox / f"agg_to_col_{name}_signed_cert.zip"), "-w", str(site))
        assert not list(site.glob("cert/ca/**/*.key")), "CA keys must never reach a site"

    aggregator = subprocess.Popen(fx_command("aggregator", "start", "-w", str(agg)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    collaborators = [
        subprocess.Popen(fx_command("collaborator", "start", "-n", name, "-w", str(site)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for name, site in sites.items()
    ]
    try:
        outputs = [proc.communicate(timeout=240)[0] for proc in collaborators]
        agg_out = aggregator.communicate(timeout=60)[0]
    finally:
        for proc in (aggregator, *collaborators):
            if proc.poll() is None:
                proc.kill()
    assert aggregator.returncode == 0, agg_out
    for proc, out in zip(collaborators, outputs):
        assert proc.returncode == 0, out
    assert "federation finished: 2 rounds" in agg_out
    assert (agg / "save" / "last.safetensors").is_file()
    assert "hospital1" in agg_out and "hospital2" in agg_out
