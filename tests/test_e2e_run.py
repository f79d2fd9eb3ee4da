"""`fx run`: a workspace made by `fx workspace create` (or frozen, or with .npz data per site)
runs as a local federation of real processes over mutual TLS, on a copy; the workspace is untouched."""

from __future__ import annotations

import json
import os
import subprocess
import zipfile
from pathlib import Path

import pytest
import yaml
from conftest import FAST, write_digits_shards

from accord.experiment.local import fx_command
from accord.plan.loader import update_plan_file

pytestmark = pytest.mark.e2e

FAST_OPTIONS = [item for key, value in FAST.items() for item in ("-o", f"{key}={json.dumps(value)}")]


def fx(*args: str, columns: int = 200, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": str(columns)}
    return subprocess.run(fx_command(*args), capture_output=True, text=True, timeout=timeout, env=env)


def snapshot(workspace: Path) -> dict[str, tuple[bytes, int]]:
    """Every file of the workspace outside fx run's folder: its bytes and mode."""
    return {
        str(p.relative_to(workspace)): (p.read_bytes(), p.stat().st_mode)
        for p in sorted(workspace.rglob("*"))
        if p.is_file() and ".accord-run" not in p.parts
    }


def metric_origins(run_folder: Path) -> set[str]:
    lines = (run_folder / "logs" / "metrics.jsonl").read_text().splitlines()
    return {json.loads(line)["origin"] for line in lines if line.strip()}


def test_fx_run_on_a_created_workspace_completes_over_mutual_tls(tmp_path: Path) -> None:
    workspace = tmp_path / ("a-workspace-with-a-rather-long-name-" * 3).rstrip("-")
    created = fx("workspace", "create", "--prefix", str(workspace), "--template", "torch_digits")
    assert created.returncode == 0, created.stderr
    before = snapshot(workspace)

    done = fx("run", "-w", str(workspace), "--collaborators", "2", "--rounds", "1", *FAST_OPTIONS, columns=60)
    out = done.stdout
    assert done.returncode == 0, (out, done.stderr)
    run_folder = workspace / ".accord-run"
    assert "(mutual TLS)" in out and "Federation summary" in out
    assert "1 of 1" in out  # rounds completed
    # a narrow terminal never breaks a path one copies from the summary
    for name in ("save/init.safetensors", "save/best.safetensors", "save/last.safetensors", "logs/metrics.jsonl"):
        assert str(run_folder / name) in out
        assert (run_folder / name).is_file()
    assert metric_origins(run_folder) == {"aggregator", "collaborator1", "collaborator2"}
    assert yaml.safe_load((run_folder / "plan" / "data.yaml").read_text()) == {"collaborator1": 1, "collaborator2": 2}
    assert (run_folder / "cert" / "client" / "col_collaborator1.key").stat().st_mode & 0o077 == 0
    # the user's workspace: not one file added, changed or re-moded (no CA, no plan edit),
    # and its archive for the sites holds none of the run's files
    assert snapshot(workspace) == before
    archive = tmp_path / "ws.zip"
    assert fx("workspace", "export", "-w", str(workspace), "--output", str(archive)).returncode == 0
    with zipfile.ZipFile(archive) as exported:
        assert sorted(exported.namelist()) == ["manifest.json", "plan/plan.yaml", "requirements.txt", "src/__init__.py", "src/model.py"]

    again = fx("run", "-w", str(workspace), "-c", "1", "-r", "1", *FAST_OPTIONS)
    assert again.returncode == 0, again.stderr
    assert metric_origins(run_folder) == {"aggregator", "collaborator1"}  # the earlier run's folder was replaced


def test_fx_run_on_a_frozen_workspace_with_a_data_path_per_site(tmp_path: Path) -> None:
    shards, _, _ = write_digits_shards(tmp_path / "data", 2)
    workspace = tmp_path / "ws"
    assert fx("workspace", "create", "--prefix", str(workspace), "--template", "torch_digits").returncode == 0
    update_plan_file(
        workspace / "plan" / "plan.yaml",
        {**FAST, "data_loader": {"template": "accord.data.npz.NpzDataLoader", "settings": {"batch_size": 32}}},
    )
    for step in (("plan", "initialize", "-w", str(workspace), "-a", "agg.example.org"), ("plan", "freeze", "-w", str(workspace))):
        result = fx(*step)
        assert result.returncode == 0, result.stderr
    before = snapshot(workspace)

    missing = fx("run", "-w", str(workspace), "-c", "2")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1, missing.stderr
    assert "collaborator1 has no data" in missing.stderr and "--data-path collaborator1=PATH" in missing.stderr

    paths = [item for i, shard in enumerate(shards, 1) for item in ("--data-path", f"collaborator{i}={shard}")]
    done = fx("run", "-w", str(workspace), "-c", "2", "-r", "1", *paths)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "frozen plan" in done.stdout and "Federation summary" in done.stdout
    run_folder = workspace / ".accord-run"
    assert metric_origins(run_folder) == {"aggregator", "collaborator1", "collaborator2"}
    # the initial model is the workspace's own, the frozen plan file as it was (hash, mode 0444)
    assert (run_folder / "save" / "init.safetensors").read_bytes() == (workspace / "save" / "init.safetensors").read_bytes()
    assert snapshot(workspace) == before
    assert "hash" in yaml.safe_load((workspace / "plan" / "plan.yaml").read_text())
