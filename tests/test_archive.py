"""fx workspace export / import: only what sites need leaves, and nothing unsafe gets in."""

from __future__ import annotations

import hashlib
import json
import stat
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import pytest

from accord.cli.main import main
from accord.plan.loader import load_plan
from accord.workspace import archive as archive_module
from accord.workspace.create import create_workspace

EXPECTED = {"manifest.json", "plan/plan.yaml", "requirements.txt", "src/__init__.py", "src/model.py"}
KEY = b"-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A template workspace with everything that must never leave planted in it."""
    ws = create_workspace(tmp_path / "ws", "torch_digits")
    (ws / "plan" / "data.yaml").write_text("alpha: /secret/hospital/data\n")
    (ws / "cert" / "ca").mkdir()
    (ws / "cert" / "ca" / "root.key").write_bytes(KEY)
    (ws / "cert" / "agg_localhost.crt").write_text("certificate")
    (ws / "data" / "patients.csv").write_text("id,diagnosis\n1,x\n")
    (ws / "save" / "init.safetensors").write_bytes(b"weights")
    (ws / "logs" / "metrics.jsonl").write_text("{}\n")
    return ws


def export(ws: Path, out: Path) -> Path:
    assert main(["workspace", "export", "-w", str(ws), "--output", str(out)]) == 0
    return out


def names_in(path: Path) -> set[str]:
    with zipfile.ZipFile(path) as zf:
        return set(zf.namelist())


def test_export_holds_exactly_what_sites_need(workspace: Path, tmp_path: Path, capsys) -> None:
    out = export(workspace, tmp_path / "out" / "ws.zip")
    printed = capsys.readouterr().out
    plan_hash = load_plan(workspace / "plan" / "plan.yaml").hash
    assert names_in(out) == EXPECTED
    assert f"plan hash {plan_hash}" in printed and str(out) in printed
    with zipfile.ZipFile(out) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        for name in EXPECTED - {"manifest.json"}:
            data = zf.read(name)
            assert b"PRIVATE KEY" not in data
            assert manifest["files"][name] == hashlib.sha256(data).hexdigest()
    assert manifest["plan_hash"] == plan_hash and set(manifest["files"]) == EXPECTED - {"manifest.json"}


@pytest.mark.parametrize("name", ["__pycache__/model.cpython-311.pyc", "model.pyc", "fast.cpython-311-x86_64-linux-gnu.so", "x.pth"])
def test_export_refuses_compiled_code_under_src(workspace: Path, tmp_path: Path, capsys, name: str) -> None:
    planted = workspace / "src" / name
    planted.parent.mkdir(exist_ok=True)
    planted.write_bytes(b"compiled")
    assert main(["workspace", "export", "-w", str(workspace), "--output", str(tmp_path / "ws.zip")]) == 2
    err = capsys.readouterr().err
    assert "the workspace hash does not cover it" in err and "delete it" in err
    assert not (tmp_path / "ws.zip").exists()


def test_export_default_path_beside_the_workspace_and_no_overwrite(workspace: Path, capsys) -> None:
    assert main(["workspace", "export", "-w", str(workspace)]) == 0
    assert (workspace.parent / "ws.zip").is_file()
    assert main(["workspace", "export", "-w", str(workspace)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["workspace", "export", "-w", str(workspace), "--force"]) == 0


def test_export_carries_workspace_defaults_files(workspace: Path, tmp_path: Path) -> None:
    (workspace / "plan" / "network.yaml").write_text("settings: {agg_port: 50999}\n")
    plan_file = workspace / "plan" / "plan.yaml"
    plan_file.write_text(plan_file.read_text() + "\n# custom defaults\n")
    from accord.plan.loader import update_plan_file

    update_plan_file(plan_file, {"network.defaults": "plan/network.yaml", "network.settings": {"agg_addr": "agg"}})
    out = export(workspace, tmp_path / "d.zip")
    assert names_in(out) == EXPECTED | {"plan/network.yaml"}
    assert main(["workspace", "import", "--archive", str(out), "--prefix", str(tmp_path / "site")]) == 0
    assert load_plan(tmp_path / "site" / "plan" / "plan.yaml").model.network.settings.agg_port == 50999


@pytest.mark.parametrize("planted", ["src/secret.txt", "src/helpers/server.pem", "src/site.key"])
def test_export_refuses_a_private_key(workspace: Path, tmp_path: Path, planted: str, capsys) -> None:
    path = workspace / planted
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(KEY if path.suffix == ".txt" else b"not obviously a key")
    out = tmp_path / "ws.zip"
    assert main(["workspace", "export", "-w", str(workspace), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert planted in err and err.count("\n") == 1
    assert not out.exists() and not list(tmp_path.glob("*.part"))


def test_export_refuses_a_broken_plan(workspace: Path, tmp_path: Path, capsys) -> None:
    (workspace / "plan" / "plan.yaml").write_text("aggregator: {settings: {rounds_to_train: 0}}\n")
    assert main(["workspace", "export", "-w", str(workspace), "--output", str(tmp_path / "x.zip")]) == 2
    assert "rounds_to_train" in capsys.readouterr().err and not (tmp_path / "x.zip").exists()


def test_import_round_trip_keeps_the_plan_hash(workspace: Path, tmp_path: Path, capsys) -> None:
    assert main(["plan", "freeze", "-w", str(workspace)]) == 0
    out = export(workspace, tmp_path / "fed.zip")
    site = tmp_path / "site"
    site.mkdir()  # an empty folder is fine
    assert main(["workspace", "import", "--archive", str(out), "--prefix", str(site)]) == 0
    printed = capsys.readouterr().out
    plan_hash = load_plan(workspace / "plan" / "plan.yaml").hash
    assert load_plan(site / "plan" / "plan.yaml").hash == plan_hash and f"plan hash {plan_hash}" in printed
    assert "generate-cert-request" in printed and "requirements.txt" in printed
    assert all((site / d).is_dir() for d in ("plan", "src", "data", "cert", "save", "logs"))
    data_yaml = (site / "plan" / "data.yaml").read_text()
    assert data_yaml.startswith("#") and data_yaml.rstrip().endswith("{}")
    assert stat.S_IMODE((site / "plan" / "plan.yaml").stat().st_mode) == 0o444  # still frozen
    assert not list((site / "cert").iterdir()) and not list((site / "data").iterdir())


def test_import_default_prefix_and_non_empty_prefix(workspace: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    out = export(workspace, tmp_path / "fed.zip")
    monkeypatch.chdir(tmp_path)
    assert main(["workspace", "import", "--archive", str(out)]) == 0
    assert (tmp_path / "fed" / "plan" / "plan.yaml").is_file()
    assert main(["workspace", "import", "--archive", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err


# ----------------------------------------------------------------------------- hostile archives


def craft(base: Path, target: Path, extra: list[tuple[str | zipfile.ZipInfo, bytes]], manifest_fix: dict | None = None) -> Path:
    """A copy of ``base`` with ``extra`` entries, its manifest listing them all, then ``manifest_fix`` applied."""
    with zipfile.ZipFile(base) as zf:
        entries = [(n, zf.read(n)) for n in zf.namelist() if n != "manifest.json"]
        manifest = json.loads(zf.read("manifest.json"))
    entries += extra
    for entry, data in extra:
        name = entry.filename if isinstance(entry, zipfile.ZipInfo) else entry
        manifest["files"][name] = hashlib.sha256(data).hexdigest()
    for name, digest in (manifest_fix or {}).items():  # None: leave the file out of the manifest
        if digest is None:
            del manifest["files"][name]
        else:
            manifest["files"][name] = digest
    with warnings.catch_warnings(), zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        warnings.simplefilter("ignore")  # duplicate names, on purpose
        for entry, data in entries:
            zf.writestr(entry, data)
        zf.writestr("manifest.json", json.dumps(manifest))
    return target


def symlink_entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.fixture
def good_zip(workspace: Path, tmp_path: Path) -> Path:
    return export(workspace, tmp_path / "good.zip")


def assert_refused(code: int, err: str, entry: str, land: Path) -> None:
    assert code == 2
    assert entry in err and err.count("\n") == 1 and "Traceback" not in err
    assert not land.exists(), "nothing may be written"


HOSTILE = {
    "zip-slip": ("../evil.py", "../evil.py"),
    "nested zip-slip": ("plan/../../x.py", "plan/../../x.py"),
    "absolute": ("/tmp/accord-pwned-abs.py", "/tmp/accord-pwned-abs.py"),
    "drive letter": ("C:/evil.py", "C:/evil.py"),
    "outside allow-list": ("cert/agg.key", "cert/agg.key"),
    "data folder": ("data/rows.csv", "data/rows.csv"),
    "top-level file": ("run.sh", "run.sh"),
    "site data config": ("plan/data.yaml", "plan/data.yaml"),
    "duplicate": ("src/model.py", "src/model.py"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_import_refuses_hostile_entries(case: str, good_zip: Path, tmp_path: Path, capsys) -> None:
    name, named = HOSTILE[case]
    bad = craft(good_zip, tmp_path / "bad.zip", [(name, b"import os\n")])
    land = tmp_path / "out"
    code = main(["workspace", "import", "--archive", str(bad), "--prefix", str(land / "site")])
    assert_refused(code, capsys.readouterr().err, named, land)
    assert not (tmp_path / "evil.py").exists() and not Path("/tmp/accord-pwned-abs.py").exists()


def test_import_refuses_a_symlink_entry(good_zip: Path, tmp_path: Path, capsys) -> None:
    bad = craft(good_zip, tmp_path / "bad.zip", [(symlink_entry("src/link.py"), b"/etc/passwd")])
    land = tmp_path / "out"
    code = main(["workspace", "import", "--archive", str(bad), "--prefix", str(land / "site")])
    err = capsys.readouterr().err
    assert_refused(code, err, "src/link.py", land)
    assert "symbolic link" in err


def test_import_refuses_a_manifest_mismatch(good_zip: Path, tmp_path: Path, capsys) -> None:
    bad = craft(good_zip, tmp_path / "bad.zip", [], manifest_fix={"src/model.py": "0" * 64})
    land = tmp_path / "out"
    code = main(["workspace", "import", "--archive", str(bad), "--prefix", str(land / "site")])
    err = capsys.readouterr().err
    assert_refused(code, err, "src/model.py", land)
    assert "SHA-256" in err


def test_import_refuses_a_file_missing_from_the_manifest(good_zip: Path, tmp_path: Path, capsys) -> None:
    bad = craft(good_zip, tmp_path / "bad.zip", [("src/extra.py", b"x = 1\n")], manifest_fix={"src/extra.py": None})
    land = tmp_path / "out"
    code = main(["workspace", "import", "--archive", str(bad), "--prefix", str(land / "site")])
    assert_refused(code, capsys.readouterr().err, "src/extra.py", land)


def test_import_refuses_a_zip_bomb_entry(good_zip: Path, tmp_path: Path, capsys) -> None:
    bad = craft(good_zip, tmp_path / "bad.zip", [("src/weights.bin", bytes(20 * 2**20))])
    land = tmp_path / "out"
    code = main(["workspace", "import", "--archive", str(bad), "--prefix", str(land / "site")])
    err = capsys.readouterr().err
    assert_refused(code, err, "src/weights.bin", land)
    assert "zip bomb" in err


def test_import_refuses_too_much_in_total(good_zip: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(archive_module, "MAX_TOTAL_BYTES", 4096)
    bad = craft(good_zip, tmp_path / "bad.zip", [("src/blob.bin", bytes(range(256)) * 32)])
    land = tmp_path / "out"
    code = main(["workspace", "import", "--archive", str(bad), "--prefix", str(land / "site")])
    err = capsys.readouterr().err
    assert_refused(code, err, "src/blob.bin", land)
    assert "total size" in err


def test_import_refuses_too_many_entries(good_zip: Path, tmp_path: Path, capsys) -> None:
    extra = [(f"src/pkg/m{i}.py", b"") for i in range(10_001)]
    bad = craft(good_zip, tmp_path / "bad.zip", extra)
    land = tmp_path / "out"
    code = main(["workspace", "import", "--archive", str(bad), "--prefix", str(land / "site")])
    err = capsys.readouterr().err
    assert code == 2 and "10000" in err and not land.exists()


def test_zip_slip_refused_by_a_real_fx_process(good_zip: Path, tmp_path: Path) -> None:
    bad = craft(good_zip, tmp_path / "bad.zip", [("../evil.py", b"import os\n")])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "accord.cli.main", "workspace", "import", "--archive", str(bad)],
        cwd=run_dir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "../evil.py" in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0
    assert not list(run_dir.iterdir()) and not (tmp_path / "evil.py").exists()


def test_import_and_plan_commands_never_run_the_archives_code(workspace: Path, tmp_path: Path) -> None:
    """A plan naming the workspace's own strategy and mod: importing the archive, freezing and
    reading the plan only allow-list those names; the code runs at start, once approved."""
    marker = tmp_path / "ran.txt"
    (workspace / "src" / "evil.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from accord.strategies import FedAvg\nfrom accord.mods.base import Mod\n"
        "class Evil(FedAvg):\n    pass\nclass EvilMod(Mod):\n    pass\n"
    )
    from accord.plan.loader import update_plan_file

    update_plan_file(
        workspace / "plan" / "plan.yaml",
        {"aggregator.settings.strategy": {"template": "src.evil.Evil"}, "collaborator.settings.mods": [{"template": "src.evil.EvilMod"}]},
    )
    out = export(workspace, tmp_path / "evil.zip")
    site = tmp_path / "site"
    assert main(["workspace", "import", "--archive", str(out), "--prefix", str(site)]) == 0
    assert main(["plan", "freeze", "-w", str(site)]) == 0
    load_plan(site / "plan" / "plan.yaml")
    assert not marker.exists()
    assert type(load_plan(site / "plan" / "plan.yaml", workspace=site).strategy()).__name__ == "Evil"  # where it runs
    assert marker.exists()
