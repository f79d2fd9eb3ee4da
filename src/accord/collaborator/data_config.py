"""A site's data config (plan/data.yaml): collaborator name -> this site's data path.

It is the site's own file, outside the plan hash; the data it names never leaves the site.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from accord.errors import AccordError
from accord.plan.loader import read_yaml

HEADER = (
    "# This site's data: collaborator name -> data path (not part of the plan hash).\n"
    "# For the built-in sets the data path is the shard number (1..collaborator_count).\n"
)


def record_data_path(config: str | os.PathLike[str], name: str, data_path: str | None) -> tuple[str, bool]:
    """Set ``name``'s data path in the YAML mapping at ``config`` (created if absent).

    ``data_path=None`` keeps an existing entry and is refused when there is none.
    Returns ``(data_path, changed)``.
    """
    path = Path(config)
    entries = read_yaml(path, "data config") if path.exists() else {}
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
    path.write_text(HEADER + yaml.safe_dump(entries, sort_keys=False), encoding="utf-8")
    return data_path, True
