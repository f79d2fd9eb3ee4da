"""``fx tutorial``: the packaged notebooks of the Python APIs, opened in Jupyter."""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import click

from accord.cli.options import OrderedGroup
from accord.errors import AccordError

#: the extra that brings Jupyter (pyproject.toml)
TUTORIAL_EXTRA = "accord[tutorial]"


def tutorial_dir() -> Path:
    """The folder of the notebooks installed with Accord."""
    return Path(__file__).resolve().parents[1] / "tutorials"


def notebooks() -> list[Path]:
    """The packaged tutorial notebooks, by name."""
    return sorted(tutorial_dir().glob("*.ipynb"))


def find_jupyter() -> str | None:
    """The module that runs Jupyter in this interpreter (``jupyterlab``, else ``notebook``), or None."""
    for module in ("jupyterlab", "notebook"):
        if find_spec(module) is not None:
            return module
    return None


def _title(path: Path) -> str:
    import json

    try:
        cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
        first = "".join(cells[0]["source"]) if cells else ""
    except (OSError, ValueError, KeyError, IndexError):
        return ""
    return first.splitlines()[0].lstrip("# ").strip() if first else ""


def copy_notebooks(folder: Path) -> tuple[list[str], list[str]]:
    """Copy the notebooks missing from ``folder``; return (copied, kept) names. Never overwrites."""
    if folder.exists() and not folder.is_dir():
        raise AccordError(f"{folder} exists and is not a folder", "pass another --dir")
    folder.mkdir(parents=True, exist_ok=True)
    copied, kept = [], []
    for source in notebooks():
        target = folder / source.name
        if target.exists():
            kept.append(source.name)
        else:
            shutil.copyfile(source, target)
            copied.append(source.name)
    return copied, kept


@click.group(cls=OrderedGroup)
def tutorial() -> None:
    """Tutorial notebooks of the Python APIs (native: torch, Keras; interactive: torch), in Jupyter."""


@tutorial.command("list")
def list_cmd() -> None:
    """List the packaged tutorial notebooks."""
    for path in notebooks():
        title = _title(path)
        click.echo(f"{path.name}  {title}" if title else path.name)


@tutorial.command("start")
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("accord-tutorials"),
    show_default=True,
    help="Folder to copy the notebooks into (files already there are kept as they are).",
)
@click.option("--port", type=int, default=None, help="Port for Jupyter (its default otherwise).")
@click.option("--ip", default=None, help="Address Jupyter listens on (its default, localhost, otherwise).")
@click.option("--no-browser", is_flag=True, help="Do not open a browser.")
@click.option("--allow-root", is_flag=True, help="Let Jupyter run as root (in a container, say).")
def start_cmd(folder: Path, port: int | None, ip: str | None, no_browser: bool, allow_root: bool) -> None:
    """Copy the notebooks into a folder and open it in Jupyter Lab (or Notebook)."""
    module = find_jupyter()
    if module is None:
        raise AccordError("Jupyter is not installed", f"install the tutorial extra: pip install '{TUTORIAL_EXTRA}'")
    copied, kept = copy_notebooks(folder)
    if copied:
        click.echo(f"copied {', '.join(copied)} into {folder}")
    if kept:
        click.echo(f"kept your copies of {', '.join(kept)} in {folder}")
    command = [sys.executable, "-m", module, *jupyter_options(port=port, ip=ip, no_browser=no_browser, allow_root=allow_root)]
    code = subprocess.call(command, cwd=folder)
    if code not in (0, 130, -2):
        raise AccordError(f"{module} exited with code {code}", "see its messages above")


def jupyter_options(*, port: int | None, ip: str | None, no_browser: bool, allow_root: bool) -> list[str]:
    """The options passed through to Jupyter, in its own spelling."""
    options = [] if port is None else [f"--port={port}"]
    options += [] if ip is None else [f"--ip={ip}"]
    options += ["--no-browser"] * no_browser + ["--allow-root"] * allow_root
    return options
