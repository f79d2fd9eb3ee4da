"""The workspace's src package is imported from its source files only, never from bytecode."""

from __future__ import annotations

import py_compile
import subprocess
import sys
from pathlib import Path

import pytest

from accord.errors import AccordError
from accord.imports import import_dotted
from accord.plan.code_settings import import_code
from accord.plan.objects import use_workspace


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(sys, "dont_write_bytecode", sys.dont_write_bytecode)  # restored afterwards
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "")  # so that teardown restores the variable as it was
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE")
    ws = tmp_path / "ws"
    (ws / "src").mkdir(parents=True)
    (ws / "src" / "__init__.py").write_text("")
    (ws / "src" / "model.py").write_text("from os import system\nVALUE = 'honest'\ndef build():\n    return VALUE\n")
    yield ws
    for name in [n for n in sys.modules if n == "src" or n.startswith("src.")]:
        del sys.modules[name]


def _plant_unchecked_pyc(ws: Path, source: str) -> None:
    evil = ws.parent / "evil"
    evil.mkdir()
    (evil / "model.py").write_text(source)
    cache = ws / "src" / "__pycache__"
    cache.mkdir(exist_ok=True)
    py_compile.compile(
        str(evil / "model.py"), cfile=str(cache / f"model.{sys.implementation.cache_tag}.pyc"), doraise=True,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )


def test_planted_bytecode_is_never_run_and_none_is_written(workspace: Path) -> None:
    _plant_unchecked_pyc(workspace, "VALUE = 'evil'\n")
    use_workspace(workspace)
    assert import_dotted("src.model.VALUE", "test") == "honest"
    assert sorted(p.name for p in (workspace / "src" / "__pycache__").iterdir()) == [
        f"model.{sys.implementation.cache_tag}.pyc"
    ]  # only the planted one: nothing written for src/__init__.py or src/model.py


def test_a_sourceless_module_under_src_is_refused(workspace: Path) -> None:
    py_compile.compile(str(workspace / "src" / "model.py"), cfile=str(workspace / "src" / "other.pyc"), doraise=True)
    use_workspace(workspace)
    with pytest.raises(AccordError, match="not Python source"):
        import_dotted("src.other.VALUE", "test")


def test_src_is_only_the_workspace_own_package(tmp_path: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stray = tmp_path / "stray"
    (stray / "src").mkdir(parents=True)
    (stray / "src" / "elsewhere.py").write_text("def run():\n    return 'stray'\n")
    monkeypatch.syspath_prepend(str(stray))
    (workspace / "src" / "__init__.py").unlink()  # a namespace package: could merge folders from sys.path
    use_workspace(workspace)
    with pytest.raises(AccordError):
        import_dotted("src.elsewhere.run", "test")
    assert import_code("task_runner.settings.model", "src.model.build")() == "honest"


def test_import_code_refuses_a_name_the_workspace_module_only_imports(workspace: Path) -> None:
    use_workspace(workspace)
    with pytest.raises(AccordError, match=r"not src's"):
        import_code("task_runner.settings.model", "src.model.system")


def test_a_python_process_started_afterwards_writes_no_bytecode_into_src(workspace: Path) -> None:
    use_workspace(workspace)
    done = subprocess.run([sys.executable, "-c", "import src.model"], cwd=workspace, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not (workspace / "src" / "__pycache__").exists()
