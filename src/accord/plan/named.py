"""Named plans: keep several plans in one workspace and switch the working one.

``plan/plan.yaml`` is the working plan, the one every command runs with. Named copies live in
``plan/plans/NAME/plan.yaml``; ``plan/plans/.active`` records which name the working plan
belongs to, so switching saves it back under that name before bringing in another.
Copies keep the file's mode, so a frozen (read-only) plan stays frozen.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from accord.errors import AccordError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
DEFAULT_NAME = "default"


class NamedPlans:
    """The named plans of one workspace."""

    def __init__(self, workspace: str | Path) -> None:
        self.workspace = Path(workspace).resolve()
        self.working = self.workspace / "plan" / "plan.yaml"
        self.root = self.workspace / "plan" / "plans"
        self.active_file = self.root / ".active"

    def path(self, name: str) -> Path:
        """Where the plan called ``name`` lives (the name is checked first)."""
        if not NAME_RE.match(name):
            raise AccordError(
                f"{name!r} is not a valid plan name",
                "use letters, digits, '_' and '-' (up to 64, starting with a letter or digit)",
            )
        return self.root / name / "plan.yaml"

    def names(self) -> list[str]:
        """The saved plans' names, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if NAME_RE.match(p.name) and (p / "plan.yaml").is_file())

    @property
    def active(self) -> str | None:
        """The name the working plan belongs to, if any."""
        if not self.active_file.is_file():
            return None
        name = self.active_file.read_text(encoding="utf-8").strip()
        return name if NAME_RE.match(name) else None

    def _set_active(self, name: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.active_file.write_text(name + "\n", encoding="utf-8")

    def _require_working(self) -> None:
        if not self.working.is_file():
            raise AccordError(f"{self.working} does not exist", "run `fx workspace create` or check --workspace")

    def save(self, name: str, force: bool = False) -> Path:
        """Copy the working plan to ``plans/NAME`` and make NAME the active plan."""
        self._require_working()
        target = self.path(name)
        if target.exists() and not force:
            raise AccordError(f"a plan named {name!r} already exists ({target})", "add --force to overwrite it")
        _copy(self.working, target)
        self._set_active(name)
        return target

    def switch(self, name: str) -> str | None:
        """Save the working plan under the active name, then make plan NAME the working plan.

        With no active name, the working plan is saved as ``default`` first (refused if a
        different ``default`` exists). Returns the name the working plan was saved under.
        """
        source = self.path(name)
        if not source.is_file():
            known = ", ".join(self.names()) or "none yet"
            raise AccordError(f"no plan named {name!r} (saved plans: {known})", "save one with `fx plan save -n NAME`")
        self._require_working()
        current = self.active
        if current == name:
            return None
        if current is None:
            current = DEFAULT_NAME
            saved = self.path(current)
            if saved.is_file() and saved.read_bytes() != self.working.read_bytes():
                raise AccordError(
                    "the working plan is not saved under any name, and a different plan named 'default' exists",
                    "save it first with `fx plan save -n NAME`",
                )
        _copy(self.working, self.path(current))
        _copy(source, self.working)
        self._set_active(name)
        return current

    def remove(self, name: str) -> None:
        """Delete the saved plan NAME (never the active one)."""
        target = self.path(name)
        if not target.is_file():
            raise AccordError(f"no plan named {name!r}", "see `fx plan list`")
        if name == self.active:
            raise AccordError(f"plan {name!r} is the active plan", "switch to another one first (`fx plan switch -n NAME`)")
        shutil.rmtree(target.parent)


def _copy(source: Path, target: Path) -> None:
    """Copy a plan file with its mode; a read-only target is replaced, not written through."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        target.unlink()
    shutil.copy2(source, target)
