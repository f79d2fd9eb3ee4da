"""The code checks of the project's standards: ruff (lint) and mypy (types), configured in
pyproject.toml, must pass; so the README's test command (scripts/test.sh) enforces them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _check(*args: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"`{' '.join(args)}` failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}"


def test_ruff_is_clean() -> None:
    _check("ruff", "check", "--no-fix", "src", "tests", "bench")


def test_mypy_is_clean() -> None:
    _check("mypy", "--config-file", "pyproject.toml")
