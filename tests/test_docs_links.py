"""docs/*.md and README.md point only at files inside the repository: every relative link, and
every repository path they name in backquotes (src/accord/..., accord/..., a module such as
aggregator/engine.py, tests/, bench/, scripts/, docs/), exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "accord"
DOCS = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE = re.compile(r"`([^`\s]+)`")
TOP = ("tests/", "bench/", "scripts/", "docs/", "shared/", "src/accord/")
SUBPACKAGES = frozenset(p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("_"))
PLACEHOLDER = re.compile(r"[*{}<>]|\.\.\.|NNN|NAME")


def link_targets(doc: Path, text: str) -> list[Path]:
    """Files the relative links of ``doc`` point at (web links and anchors in the page left out)."""
    targets = []
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue
        targets.append((doc.parent / target.split("#")[0]).resolve())
    return targets


def repo_paths(doc: Path, text: str) -> list[Path]:
    """The repository files ``doc`` names in backquotes; workspace paths (plan/, src/model.py, save/...) are not the repository's."""
    paths = []
    for token in CODE.findall(text):
        if PLACEHOLDER.search(token):
            continue
        first = token.split("/")[0]
        if token.startswith(TOP) or token in ("pyproject.toml", "README.md"):
            paths.append(ROOT / token)
        elif token.startswith("accord/"):
            paths.append(ROOT / "src" / token)
        elif first in SUBPACKAGES and token.endswith(".py"):
            paths.append(PACKAGE / token)
        elif "/" not in token and token.endswith(".md"):
            paths.append(doc.parent / token)
    return paths


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_link_and_repo_path_exists(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    missing = [p for p in link_targets(doc, text) + repo_paths(doc, text) if not p.exists()]
    outside = [p for p in link_targets(doc, text) if not p.is_relative_to(ROOT)]
    assert not missing and not outside, f"{doc.name} points at {sorted(set(map(str, missing + outside)))}"


def test_the_check_sees_what_is_missing(tmp_path: Path) -> None:
    doc = ROOT / "docs" / "page.md"
    text = "[a](plan.md) [b](gone.md#x) [c](https://example.org) `aggregator/nothing.py` `accord/logs.py` `plan/data.yaml` `bench/x.py`"
    assert [p.name for p in link_targets(doc, text)] == ["plan.md", "gone.md"]
    assert [p.relative_to(ROOT).as_posix() for p in repo_paths(doc, text)] == [
        "src/accord/aggregator/nothing.py",
        "src/accord/logs.py",
        "bench/x.py",
    ]
