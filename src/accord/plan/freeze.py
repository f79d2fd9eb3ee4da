"""Freeze a plan: store its hash in the file and make the file read-only.

A frozen plan is checked on every later load (``validate_plan`` compares the stored hash
with the plan's), so nobody runs a federation with a plan edited after it was agreed.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path

import yaml

from accord.plan.loader import Plan, load_plan, read_yaml, update_plan_file

READ_ONLY = 0o444


def is_frozen(path: Path) -> bool:
    """Whether the plan file carries a hash or has lost its owner-write bit."""
    return read_yaml(path).get("hash") is not None or not path.stat().st_mode & stat.S_IWUSR


@dataclass(frozen=True)
class FreezeResult:
    """What ``freeze_plan`` did: the plan's hash, and whether it was frozen already."""

    hash: str
    already: bool


def _append_hash(path: Path, digest: str) -> bool:
    """Append ``hash: DIGEST`` as text, keeping the file's comments; False where that would not parse."""
    text = path.read_text(encoding="utf-8")
    raw = yaml.safe_load(text) or {}
    if "hash" in raw:
        return False
    new_text = text + ("" if text.endswith("\n") or not text else "\n") + f"hash: {digest}\n"
    try:
        if yaml.safe_load(new_text) != {**raw, "hash": digest}:
            return False
    except yaml.YAMLError:
        return False
    path.write_text(new_text, encoding="utf-8")
    return True


def freeze_plan(path: Path, workspace: Path | None = None) -> FreezeResult:
    """Write the plan's hash into its ``hash`` key and chmod it 0444; a frozen plan is left as it is.

    Loading first verifies a stored hash, so a plan edited after freezing is refused here too.
    """
    path = Path(path).resolve()
    plan: Plan = load_plan(path, workspace=workspace)
    if plan.model.hash is not None:
        path.chmod(READ_ONLY)
        return FreezeResult(plan.hash, already=True)
    path.chmod(path.stat().st_mode | stat.S_IWUSR)
    if not _append_hash(path, plan.hash):
        update_plan_file(path, {"hash": plan.hash})
    path.chmod(READ_ONLY)
    return FreezeResult(plan.hash, already=False)
