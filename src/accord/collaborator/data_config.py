"""A site's data config (plan/data.yaml): collaborator name -> this site's data path.

It is the site's own file, outside the plan hash; the data it names never leaves the site.
Accord writes it as a YAML mapping; OpenFL's ``name,path`` lines (one a site, ``#`` comments)
are read as well, and kept in that format when a site is added.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from accord.errors import AccordError
from accord.plan.loader import Plan, read_yaml

HEADER = (
    "# This site's data: collaborator name -> data path (not part of the plan hash).\n"
    "# For the built-in sets the data path is the shard number (1..collaborator_count).\n"
)


def _openfl_lines(text: str) -> list[str] | None:
    """The ``name,path`` lines of an OpenFL data.yaml, or None when the file is YAML."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if lines and all("," in line and ":" not in line.split(",", 1)[0] for line in lines):
        return lines
    return None


def read_data_config(config: str | os.PathLike[str]) -> dict[str, str]:
    """The data config at ``config`` as name -> data path: a YAML mapping, or OpenFL's ``name,path`` lines."""
    path = Path(config)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AccordError(f"data config file {path} does not exist", "check the path, or run `fx collaborator create`") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AccordError(f"data config file {path} cannot be read: {exc}") from exc
    lines = _openfl_lines(text)
    if lines is None:
        return read_yaml(path, "data config")
    entries: dict[str, str] = {}
    for line in lines:
        name, data_path = (part.strip() for part in line.split(",", 1))
        if name in entries:
            raise AccordError(f"{path}: collaborator {name!r} is listed twice", "keep one line per collaborator")
        entries[name] = data_path
    return entries


def record_data_path(config: str | os.PathLike[str], name: str, data_path: str | None) -> tuple[str, bool]:
    """Set ``name``'s data path in the YAML mapping at ``config`` (created if absent).

    ``data_path=None`` keeps an existing entry and is refused when there is none.
    Returns ``(data_path, changed)``.
    """
    path = Path(config)
    entries = read_data_config(path) if path.exists() else {}
    if data_path is None:
        if name not in entries:
            raise AccordError(
                f"{path} has no data path for collaborator {name!r}",
                "give this site's data with --data-path PATH (for built-in sets, the shard number)",
            )
        return str(entries[name]), False
    if entries.get(name) == data_path:
        return data_path, False
    entries[name] = data_path
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and _openfl_lines(path.read_text(encoding="utf-8")) is not None:
        if "," in name or "\n" in data_path:
            raise AccordError(
                f"{name},{data_path} cannot be one line of {path}", "choose a name and path without ',' or newlines"
            )
        kept = [line for line in path.read_text(encoding="utf-8").splitlines() if not line.startswith(f"{name},")]
        path.write_text("\n".join([*kept, f"{name},{data_path}"]) + "\n", encoding="utf-8")
    else:
        path.write_text(HEADER + yaml.safe_dump(entries, sort_keys=False), encoding="utf-8")
    return data_path, True


def data_path_for(plan: Plan, name: str) -> str:
    """This collaborator's data path from the site's data.yaml (shard number for built-in sets)."""
    path = plan.resolve_path(plan.model.collaborator.settings.data_config_path)
    entries = read_data_config(path)
    if name not in entries:
        raise AccordError(
            f"{path} has no data path for collaborator {name!r}",
            f"add a line `{name}: <data path>` (for built-in sets, the shard number)",
        )
    return str(entries[name])
