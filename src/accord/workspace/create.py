"""Create a workspace from a template packaged with Accord."""

from __future__ import annotations

import shutil
from pathlib import Path

from accord.errors import AccordError

TEMPLATES_DIR = Path(__file__).parent / "templates"
LAYOUT = ("plan", "src", "data", "cert", "save", "logs")


def list_templates() -> list[str]:
    """Names of the packaged workspace templates."""
    return sorted(p.name for p in TEMPLATES_DIR.iterdir() if (p / "plan" / "plan.yaml").is_file())


def create_workspace(prefix: str | Path, template: str) -> Path:
    """Copy ``template`` into ``prefix`` (which must not exist or be empty)."""
    source = TEMPLATES_DIR / template
    if template not in list_templates():
        raise AccordError(
            f"no workspace template named {template!r}",
            f"choose one of: {', '.join(list_templates())}",
        )
    target = Path(prefix).resolve()
    if target.exists() and any(target.iterdir()):
        raise AccordError(f"{target} already exists and is not empty", "choose a new --prefix")
    shutil.copytree(source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    for folder in LAYOUT:
        (target / folder).mkdir(exist_ok=True)
    return target
