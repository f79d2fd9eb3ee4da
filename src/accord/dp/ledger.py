"""A site's spent privacy budget: every release its local mechanism made (LocalDP's noised
updates, DP-SGD's Opacus steps), kept in a JSON file in the site's own state folder.

A release is recorded (written atomically and flushed) *before* it leaves the site, so a site
that dies after recording and before sending counts one release too many, never one too few; a
restarted site reads the file and goes on counting. Without a folder (the Python API, the
simulation) the ledger is in memory: it counts this process's releases only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from accord.errors import AccordError
from accord.files import atomic_write

#: where a site keeps its own state, under its workspace (one folder per site name)
SITE_STATE = "save/site-{name}"


class BudgetSpent(AccordError):
    """The site refuses a training task: its planned privacy budget is spent."""

    @property
    def report(self) -> str:
        """What the aggregator is told (no local paths in it)."""
        return self.message


class Ledger:
    """The releases of one mechanism at one site: a list of JSON rows, appended one at a time."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.rows: list[Any] = _read(path) if path is not None else []

    def add(self, row: Any) -> None:
        """Record one release (durably, when the ledger has a file)."""
        self.rows.append(row)
        if self.path is not None:
            atomic_write(self.path, json.dumps({"releases": self.rows}).encode(), 0o600)


def _read(path: Path) -> list[Any]:
    """The rows saved at ``path`` ([] if there is none yet); a damaged file is refused, never
    taken as a fresh budget."""
    if not path.exists():
        return []
    try:
        rows = json.loads(path.read_bytes())["releases"]
        if not isinstance(rows, list):
            raise TypeError("releases is not a list")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AccordError(
            f"the site's privacy ledger {path} cannot be read ({type(exc).__name__}: {exc})",
            "restore it from a backup; deleting it would forget the budget this site has spent",
        ) from exc
    return rows
