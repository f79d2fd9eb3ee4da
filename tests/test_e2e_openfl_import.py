"""An OpenFL workspace imported with `fx workspace import --from-openfl` is an Accord workspace
that runs: `fx run` starts a real aggregator and two collaborators over mutual TLS on it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from accord.experiment.local import fx_command
from accord.plan.loader import read_yaml

pytestmark = pytest.mark.e2e

DATA = Path(__file__).parent / "data" / "openfl"


def test_an_imported_openfl_torch_mnist_runs_through_fx(tmp_path: Path) -> None:
    ws = tmp_path / "mnist_accord"
    imported = subprocess.run(
        fx_command("workspace", "import", "--from-openfl", str(DATA / "torch_mnist"), "--prefix", str(ws)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert imported.returncode == 0, imported.stderr[-3000:]
    assert "network.settings.hash_salt: has no meaning in Accord" in imported.stdout
    assert "openfl." not in (ws / "plan" / "plan.yaml").read_text()
    assert read_yaml(ws / "plan" / "data.yaml") == {"collaborator1": "1", "collaborator2": "2"}
    done = subprocess.run(fx_command("run", "-w", str(ws)), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    assert "(mutual TLS)" in done.stdout + done.stderr and "2 of 2" in done.stdout
    metrics = ws / ".accord-run" / "logs" / "metrics.jsonl"
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    final = [
        r["value"]
        for r in records
        if (r["origin"], r["task"], r["metric"]) == ("aggregator", "aggregated_model_validation", "accuracy")
    ]
    assert {r["origin"] for r in records} - {"aggregator"} == {"collaborator1", "collaborator2"}
    assert final and final[-1] > 0.6, final  # the digits CNN learns in the plan's two rounds
