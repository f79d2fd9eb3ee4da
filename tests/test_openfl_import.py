"""fx workspace import --from-openfl (a folder, a zip), fx collaborator create, fx model save."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest
import yaml

from accord.cli.main import main
from accord.collaborator.data_config import read_data_config
from accord.plan.loader import load_plan, read_yaml

DATA = Path(__file__).parent / "data" / "openfl"


def openfl_folder(tmp_path: Path, name: str = "torch_mnist") -> Path:
    """The verbatim workspace with what an OpenFL run leaves: a model, a certificate, logs."""
    ws = tmp_path / "openfl" / name
    shutil.copytree(DATA / name, ws)
    (ws / "save").mkdir()
    (ws / "save" / "last.pbuf").write_bytes(b"\x08\x01protobuf")
    (ws / "cert").mkdir()
    (ws / "cert" / "agg.key").write_text("-----BEGIN PRIVATE KEY-----\n")
    (ws / ".workspace").write_text("")
    (ws / "src" / "__pycache__").mkdir()
    (ws / "src" / "__pycache__" / "taskrunner.cpython-312.pyc").write_bytes(b"\x00")
    (ws / "src" / "site_secret.py").write_text('KEY = """-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n"""\n')
    return ws


def zip_of(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, f"{folder.name}/{path.relative_to(folder).as_posix()}")
    return archive


def check_imported(ws: Path, out: str) -> None:
    assert "mapped:" in out and "warned (no meaning in Accord; dropped):" in out and "files left behind:" in out
    for line in (
        "aggregator.template openfl.component.aggregator.Aggregator: -> Accord's own aggregator",
        "network.settings.hash_salt: has no meaning in Accord",
        "network.settings.cert_folder: -> network.settings.cert_dir",
        "save/last.pbuf: OpenFL's model files",
        "cert/agg.key: OpenFL's certificates",
        "src/__pycache__/taskrunner.cpython-312.pyc: a __pycache__ folder",
        "src/site_secret.py: it ",
    ):
        assert line in out, line
    assert sorted(p.name for p in (ws / "plan").iterdir()) == ["data.yaml", "plan.yaml"]
    assert not (ws / "save" / "last.pbuf").exists() and not (ws / "cert" / "agg.key").exists()
    assert not (ws / "src" / "__pycache__").exists() and not (ws / "src" / "site_secret.py").exists()
    for name in ("taskrunner.py", "dataloader.py", "cnn_model.py"):
        assert (ws / "src" / name).read_bytes() == (DATA / "torch_mnist" / "src" / name).read_bytes()
    assert read_data_config(ws / "plan" / "data.yaml") == {"collaborator1": "1", "collaborator2": "2"}
    assert yaml.safe_load((ws / "plan" / "data.yaml").read_text()) == {"collaborator1": "1", "collaborator2": "2"}
    plan = load_plan(ws / "plan" / "plan.yaml")
    assert plan.openfl_notes == ()  # an Accord plan now: nothing left to translate
    raw = read_yaml(ws / "plan" / "plan.yaml")
    assert "openfl." not in (ws / "plan" / "plan.yaml").read_text()
    assert raw["tasks"]["settings"]["train"]["function"] == "train"
    assert plan.model.task_runner.template == "src.taskrunner.TemplateTaskRunner"
    assert plan.model.aggregator.settings.rounds_to_train == 2


def test_import_from_an_openfl_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = openfl_folder(tmp_path)
    ws = tmp_path / "accord_ws"
    assert main(["--log-level", "ERROR", "workspace", "import", "--from-openfl", str(source), "--prefix", str(ws)]) == 0
    check_imported(ws, capsys.readouterr().out)


def test_import_from_a_zip_of_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    archive = zip_of(openfl_folder(tmp_path), tmp_path / "torch_mnist.zip")
    ws = tmp_path / "accord_ws"
    assert main(["--log-level", "ERROR", "workspace", "import", "--from-openfl", str(archive), "--prefix", str(ws)]) == 0
    check_imported(ws, capsys.readouterr().out)


def test_a_template_tree_s_defaults_pointer_is_followed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """OpenFL's own template folders name plan/defaults in a text file: its files are merged."""
    tree = tmp_path / "openfl-workspace"
    shutil.copytree(DATA / "torch_mnist", tree / "torch" / "mnist")
    shutil.move(tree / "torch" / "mnist" / "plan" / "defaults", tree / "workspace-defaults")
    (tree / "workspace" / "plan").mkdir(parents=True)
    shutil.move(tree / "workspace-defaults", tree / "workspace" / "plan" / "defaults")
    (tree / "torch" / "mnist" / "plan" / "defaults").write_text("../../workspace/plan/defaults\n")
    ws = tmp_path / "ws"
    assert (
        main(["--log-level", "ERROR", "workspace", "import", "--from-openfl", str(tree / "torch" / "mnist"), "--prefix", str(ws)])
        == 0
    )
    out = capsys.readouterr().out
    assert "network.settings.hash_salt: has no meaning in Accord" in out
    assert "aggregator.settings.persist_checkpoint: has no meaning in Accord" in out


@pytest.mark.parametrize(
    ("entry", "why"),
    [("../evil.py", "'..' in the path"), ("/etc/cron.d/x", "absolute path"), ("ws\\src\\x.py", "backslash")],
)
def test_an_unsafe_zip_is_refused_and_nothing_is_written(
    entry: str, why: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = zip_of(openfl_folder(tmp_path), tmp_path / "ws.zip")
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr(entry, "import os\n")
    ws = tmp_path / "accord_ws"
    assert main(["workspace", "import", "--from-openfl", str(archive), "--prefix", str(ws)]) == 2
    err = capsys.readouterr().err
    assert why in err and "nothing was written" in err and len(err.strip().splitlines()) == 1
    assert not ws.exists() and not (tmp_path / "evil.py").exists()


def test_a_refused_key_stops_the_import_with_nothing_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = openfl_folder(tmp_path)
    plan = source / "plan" / "plan.yaml"
    plan.write_text(plan.read_text().replace("write_logs: false", "write_logs: false\n    callbacks: [src.cb.Cb]"))
    ws = tmp_path / "accord_ws"
    assert main(["workspace", "import", "--from-openfl", str(source), "--prefix", str(ws)]) == 2
    err = capsys.readouterr().err
    assert "aggregator.settings.callbacks" in err and "(fix: " in err
    assert not ws.exists()


def test_import_needs_one_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["workspace", "import", "--prefix", str(tmp_path / "ws")]) == 2
    assert "--from-openfl" in capsys.readouterr().err


def test_collaborator_create_adds_the_site_to_data_yaml_and_cols_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ws = openfl_folder(tmp_path)
    assert main(["--log-level", "ERROR", "collaborator", "create", "-n", "three", "-d", "3", "-w", str(ws)]) == 0
    assert (ws / "plan" / "data.yaml").read_text().splitlines()[-1] == "three,3"
    assert read_yaml(ws / "plan" / "cols.yaml")["collaborators"] == ["three"]
    assert "collaborators" not in read_yaml(ws / "plan" / "plan.yaml")
    assert load_plan(ws / "plan" / "plan.yaml").model.collaborators == ["three"]
    assert "fx collaborator generate-cert-request -n three" in capsys.readouterr().out
    assert main(["collaborator", "create", "-n", "bad,name", "-d", "4", "-w", str(ws)]) == 2


def test_collaborator_create_in_an_accord_workspace(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    assert main(["workspace", "create", "--prefix", str(ws), "--template", "torch_digits"]) == 0
    assert main(["collaborator", "create", "-n", "one", "-d", "1", "-w", str(ws)]) == 0
    assert read_data_config(ws / "plan" / "data.yaml") == {"one": "1"}
    assert read_yaml(ws / "plan" / "plan.yaml")["collaborators"] == ["one"]


def test_model_save_says_the_command_to_type(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model", "save", "-i", "save/best.pbuf", "-o", "model_out", "-p", "plan/plan.yaml"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "fx model export --best --format torch -o model_out" in err


@pytest.mark.parametrize("twin", ["ws/src/taskrunner.py", "ws/src/TaskRunner.py"])
def test_a_zip_naming_a_file_twice_is_refused(twin: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two entries for one file (or two that one case-insensitive disk makes one): which one a
    site runs would depend on the order of writing; Accord's own archives refuse it too."""
    source = openfl_folder(tmp_path)
    archive = tmp_path / "ws.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(source.rglob("*")):
            if path.is_file():
                zf.write(path, f"ws/{path.relative_to(source).as_posix()}")
        zf.writestr(twin, "import os\nos.system('echo owned')\n")
    ws = tmp_path / "accord_ws"
    assert main(["workspace", "import", "--from-openfl", str(archive), "--prefix", str(ws)]) == 2
    err = capsys.readouterr().err
    assert "duplicate name" in err and twin in err and len(err.strip().splitlines()) == 1
    assert not ws.exists()
