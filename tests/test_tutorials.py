"""The packaged tutorial notebooks run top to bottom; `fx tutorial` lists and starts them."""

from __future__ import annotations

import ast
import importlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from importlib.util import find_spec
from pathlib import Path

import pytest

from accord.cli import tutorial
from accord.cli.main import main
from accord.experiment.local import free_port, fx_command

NOTEBOOKS = ["native_torch_digits.ipynb", "native_keras_digits.ipynb", "interactive_torch_digits.ipynb"]
NEEDS = {"native_torch_digits.ipynb": "torch", "native_keras_digits.ipynb": "keras", "interactive_torch_digits.ipynb": "torch"}


def _outputs_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                parts.append(out.get("text", ""))
            elif "data" in out:
                parts.append(out["data"].get("text/plain", ""))
    return "".join(parts)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_and_reaches_90_percent(name: str, tmp_path: Path) -> None:
    if find_spec(NEEDS[name]) is None:
        pytest.skip(f"needs the {NEEDS[name]} extra")
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")

    nb = nbformat.read(tutorial.tutorial_dir() / name, as_version=4)
    # The kernel must be this interpreter (the venv's), not some other python on PATH.
    nb.cells.insert(0, nbformat.v4.new_code_cell("import sys; print('KERNEL-PYTHON', sys.executable)"))
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    started = time.monotonic()
    client.execute()  # raises CellExecutionError if a cell fails
    seconds = time.monotonic() - started

    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
    text = _outputs_text(nb)
    kernel = re.search(r"KERNEL-PYTHON (\S+)", text)
    assert kernel and Path(kernel.group(1)).resolve() == Path(sys.executable).resolve(), text[:500]
    found = re.search(r"final accuracy: ([0-9.]+)", text)
    assert found, text[-2000:]
    assert float(found.group(1)) >= 0.9, text[-2000:]
    print(f"{name}: {seconds:.1f} s, accuracy {found.group(1)}")


def test_packaged_notebooks_have_no_outputs() -> None:
    nbformat = pytest.importorskip("nbformat")
    for name in NOTEBOOKS:
        nb = nbformat.read(tutorial.tutorial_dir() / name, as_version=4)
        nbformat.validate(nb)
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")


def test_tutorial_list_names_every_notebook(capsys) -> None:
    assert main(["tutorial", "list"]) == 0
    out = capsys.readouterr().out
    for name in NOTEBOOKS:
        assert name in out


def test_tutorial_start_without_jupyter_is_one_line_and_exit_2(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(tutorial, "find_jupyter", lambda: None)
    called = []
    monkeypatch.setattr(tutorial.subprocess, "call", lambda *a, **k: called.append(a) or 0)
    code = main(["tutorial", "start", "--dir", str(tmp_path / "t"), "--no-browser"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and not called
    assert err.count("\n") == 0 and "Traceback" not in err
    assert "Jupyter is not installed (fix: install the tutorial extra: pip install 'accord[tutorial]')" in err


def test_tutorial_start_copies_and_runs_jupyter(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(tutorial, "find_jupyter", lambda: "jupyterlab")
    calls = []
    monkeypatch.setattr(tutorial.subprocess, "call", lambda cmd, **kw: calls.append((cmd, kw)) or 0)
    folder = tmp_path / "t"
    assert main(["tutorial", "start", "--dir", str(folder), "--port", "8999", "--no-browser"]) == 0
    assert sorted(p.name for p in folder.glob("*.ipynb")) == sorted(NOTEBOOKS)
    (cmd, kw), = calls
    assert cmd == [sys.executable, "-m", "jupyterlab", "--port=8999", "--no-browser"] and Path(kw["cwd"]) == folder

    # The user's edits are never overwritten; a deleted notebook is copied back.
    edited = folder / NOTEBOOKS[0]
    edited.write_text("{}", encoding="utf-8")
    (folder / NOTEBOOKS[1]).unlink()
    assert main(["tutorial", "start", "--dir", str(folder), "--no-browser"]) == 0
    assert edited.read_text(encoding="utf-8") == "{}"
    assert (folder / NOTEBOOKS[1]).is_file()

    assert main(["tutorial", "start", "--dir", str(folder), "--ip", "0.0.0.0", "--allow-root", "--port", "8888"]) == 0
    assert calls[-1][0][3:] == ["--port=8888", "--ip=0.0.0.0", "--allow-root"]


def test_tutorial_start_serves_jupyter_for_real(tmp_path: Path) -> None:
    """`fx tutorial start` as a user types it in a container: Jupyter's server answers on the port."""
    port = free_port()
    folder = tmp_path / "tutorials"
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_CONFIG_DIR": str(tmp_path / "config")}
    args = ("tutorial", "start", "--dir", str(folder), "--no-browser", "--port", str(port), "--ip", "127.0.0.1", "--allow-root")
    log = (tmp_path / "jupyter.log").open("w")
    proc = subprocess.Popen(fx_command(*args), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        answer = None
        deadline = time.monotonic() + 180
        while answer is None and proc.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api", timeout=5) as reply:
                    answer = json.loads(reply.read())
            except OSError:
                time.sleep(0.5)
        assert answer is not None and "version" in answer, (tmp_path / "jupyter.log").read_text()[-3000:]
        assert sorted(p.name for p in folder.glob("*.ipynb")) == sorted(NOTEBOOKS)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _accord_imports(source: str) -> list[tuple[str, str | None]]:
    """(module, name) of every import of accord in a code cell; IPython's ! and % lines left out."""
    code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("!", "%")))
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names if alias.name.split(".")[0] == "accord"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "accord":
            found += [(node.module, alias.name) for alias in node.names]
    return found


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebooks_import_only_public_names(name: str) -> None:
    cells = json.loads((tutorial.tutorial_dir() / name).read_text(encoding="utf-8"))["cells"]
    imports = [i for c in cells if c["cell_type"] == "code" for i in _accord_imports("".join(c["source"]))]
    assert imports, f"{name} imports nothing from accord"
    for module, imported in imports:
        private = [part for part in [*module.split("."), imported or ""] if part.startswith("_")]
        assert not private, f"{name}: {module} {imported or ''} is private"
        exported = getattr(importlib.import_module(module), "__all__", None)
        if imported is not None and exported is not None:
            assert imported in exported, f"{name}: {imported} is not in {module}.__all__"


def test_notebook_import_check_sees_private_names() -> None:
    found = _accord_imports("!pip install x\nimport accord._x\nfrom accord.native import _hidden, init\n")
    assert found == [("accord._x", None), ("accord.native", "_hidden"), ("accord.native", "init")]
