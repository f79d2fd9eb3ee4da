"""``fx workspace import --from-openfl``: an OpenFL 1.6-1.9 workspace (a folder or a zip) made
an Accord workspace, with what was mapped, warned about and dropped (docs/migrating-from-openfl.md).

Only text is read: the plan's YAML (safe_load), cols.yaml and data.yaml, and the workspace's
``src/`` and ``requirements.txt`` copied as bytes. Nothing is unpickled, evaluated or imported;
OpenFL's models (``save/*.pbuf``), certificates, logs and data stay behind. A zip's entries are
checked as Accord's own archives' are (workspace/archive.py): an unsafe name, a name given
twice (ignoring case), a link or a zip bomb refuses the whole archive before anything is written.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath

import yaml

from accord.collaborator.data_config import HEADER as DATA_CONFIG_HEADER
from accord.collaborator.data_config import read_data_config
from accord.errors import AccordError
from accord.plan.identity import compiled_code_problem
from accord.plan.loader import Plan, load_plan, openfl_to_accord, read_yaml, validate_plan, with_cols_yaml
from accord.plan.openfl_plan import Note
from accord.workspace.archive import (
    MAX_ENTRIES,
    MAX_TOTAL_BYTES,
    entry_problem,
    place_workspace,
    secret_problem,
    unsafe_name,
)
from accord.workspace.create import LAYOUT

PLAN = "plan/plan.yaml"
PLAN_HEADER = "# Converted from an OpenFL workspace by `fx workspace import --from-openfl`.\n"

#: why the files Accord does not take stay behind, by their top folder
_LEFT_BEHIND = {
    "save": "OpenFL's model files (.pbuf); Accord starts from the task runner's model (fx plan initialize)",
    "cert": "OpenFL's certificates; certify the sites again with Accord's CA (fx workspace certify)",
    "logs": "OpenFL's logs",
    "data": "data stays at each site (plan/data.yaml names it)",
    "local_state": "OpenFL's tensor database",
    ".workspace": "OpenFL's workspace marker",
}


@dataclass
class OpenflImport:
    """The Accord workspace made, its plan, a note per OpenFL key and each file left behind with why."""

    workspace: Path
    plan: Plan
    notes: list[Note]
    dropped: list[tuple[str, str]] = field(default_factory=list)


def _wanted(name: str) -> str | None:
    """Why ``name`` (relative to the workspace) is not carried over, or None to carry it."""
    if name in (PLAN, "plan/cols.yaml", "plan/data.yaml", "requirements.txt"):
        return None
    parts = PurePosixPath(name).parts
    if name.startswith("plan/defaults/") and name.endswith((".yaml", ".yml")) and len(parts) == 3:
        return None
    if parts[0] == "src":
        return compiled_code_problem(name)
    return _LEFT_BEHIND.get(parts[0], "not part of an Accord workspace (plan/, src/, requirements.txt)")


#: a file's name in the workspace and what reads its bytes (None: a link, never followed)
Entry = tuple[str, Callable[[], bytes] | None]


def _zip_files(source: Path, stack: contextlib.ExitStack) -> list[Entry]:
    """The zip's files, every entry checked first; the archive stays open until ``stack`` closes."""
    try:
        archive = stack.enter_context(zipfile.ZipFile(source))
    except (zipfile.BadZipFile, OSError) as exc:
        raise AccordError(f"{source} is not a readable zip archive: {exc}", "give the OpenFL workspace's folder or zip") from exc
    infos = archive.infolist()
    if len(infos) > MAX_ENTRIES:
        raise AccordError(f"{source}: {len(infos)} entries, more than {MAX_ENTRIES}; nothing was written")
    total = 0
    seen: set[str] = set()
    for info in infos:
        key = info.filename.rstrip("/").casefold()
        why = unsafe_name(info.filename) or entry_problem(info) or ("duplicate name" if key in seen else None)
        seen.add(key)
        if why:
            raise AccordError(f"{source}: refusing entry {info.filename!r}: {why}; nothing was written")
        total += info.file_size
        if total > MAX_TOTAL_BYTES:
            raise AccordError(f"{source}: over {MAX_TOTAL_BYTES // 2**20} MiB (zip bomb?); nothing was written")
    return [(info.filename, partial(_read_entry, archive, info, source)) for info in infos if not info.is_dir()]


def _read_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, source: Path) -> bytes:
    with archive.open(info) as stream:
        data = stream.read(info.file_size + 1)
    if len(data) != info.file_size:
        raise AccordError(f"{source}: entry {info.filename!r} is not the size it declares; nothing was written")
    return data


def _folder_files(source: Path) -> Iterator[Entry]:
    """Every file under ``source`` (a link: None, so it is dropped), but ``plan/defaults``: in
    OpenFL's template trees a link or a text file naming the shared defaults folder, followed."""
    for folder, dirs, files in os.walk(source):
        here = Path(folder)
        for name in sorted(files) + [d for d in dirs if (here / d).is_symlink()]:
            path = here / name
            rel = path.relative_to(source).as_posix()
            if rel == "plan/defaults":
                yield from _pointed_defaults(path)
            else:
                yield rel, None if path.is_symlink() else path.read_bytes


def _pointed_defaults(pointer: Path) -> Iterator[Entry]:
    if pointer.is_symlink():
        target = pointer.resolve()
    else:  # OpenFL's template trees name it from the workspace's folder
        target = (pointer.parent.parent / pointer.read_text(encoding="utf-8").strip()).resolve()
    if not target.is_dir():
        yield "plan/defaults", None
        return
    for path in sorted(target.glob("*.yaml")):
        yield f"plan/defaults/{path.name}", path.read_bytes


def _strip_top(files: list[Entry]) -> list[Entry]:
    """A zip of the workspace's folder holds ``NAME/plan/plan.yaml``: drop the ``NAME/``."""
    names = {name for name, _ in files}
    if PLAN in names:
        return files
    tops = {name.split("/", 1)[0] for name in names}
    if len(tops) == 1:
        top = tops.pop() + "/"
        return [(name[len(top) :], data) for name, data in files if name.startswith(top)]
    return files


def import_openfl(source: str | Path, prefix: str | Path | None = None) -> OpenflImport:
    """Make an Accord workspace at ``prefix`` (default ``./<name>``) from the OpenFL workspace ``source``."""
    source = Path(source).resolve()
    if not source.exists():
        raise AccordError(f"OpenFL workspace {source} does not exist", "give the workspace's folder or its zip")
    target = Path(prefix).resolve() if prefix else Path.cwd() / source.stem
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise AccordError(f"{target} already exists and is not empty", "choose a new --prefix")
    with contextlib.ExitStack() as open_zip, tempfile.TemporaryDirectory(prefix="accord-openfl-") as tmp:
        files = _strip_top(_zip_files(source, open_zip) if source.is_file() else list(_folder_files(source)))
        if PLAN not in {name for name, _ in files}:
            raise AccordError(f"{source} has no {PLAN}", "is this an OpenFL workspace (fx workspace create, or its export)?")
        staging = Path(tmp) / "workspace"
        dropped = _copy(files, staging)
        notes = _convert(staging)
        for folder in LAYOUT:
            (staging / folder).mkdir(exist_ok=True)
        place_workspace(staging, target)
    return OpenflImport(target, load_plan(target / PLAN), notes, dropped)


def _copy(files: list[Entry], staging: Path) -> list[tuple[str, str]]:
    """Write the files Accord takes under ``staging``; the others, each with why it stays behind."""
    dropped: list[tuple[str, str]] = []
    for name, read in files:
        why = "a symbolic link" if read is None else _wanted(name)
        data = read() if read is not None and why is None else b""
        why = why or secret_problem(name, data)
        if why:
            dropped.append((name, why))
            continue
        path = staging / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return dropped


def _convert(staging: Path) -> list[Note]:
    """Write the translated plan and data.yaml in ``staging``; drop the files merged into the plan."""
    plan_path = staging / PLAN
    raw = with_cols_yaml(read_yaml(plan_path), plan_path)
    data, notes = openfl_to_accord(raw, staging)
    data = {**data, "collaborators": list(data.get("collaborators") or [])}
    if (staging / "plan/cols.yaml").is_file():
        notes.append(Note("plan/cols.yaml", f"-> collaborators {data['collaborators']}"))
    validate_plan(data, staging, source=PLAN)  # a PlanError here: nothing is written
    plan_path.write_text(PLAN_HEADER + yaml.safe_dump(dict(data), sort_keys=False), encoding="utf-8")
    config = staging / "plan/data.yaml"
    entries = read_data_config(config) if config.is_file() else {}
    config.write_text(DATA_CONFIG_HEADER + yaml.safe_dump(entries, sort_keys=False), encoding="utf-8")
    if entries:
        notes.append(Note("plan/data.yaml", f"name,path lines -> Accord's mapping {entries}"))
    for merged in [staging / "plan/cols.yaml", *sorted((staging / "plan/defaults").glob("*"))]:
        merged.unlink(missing_ok=True)
    if (staging / "plan/defaults").is_dir():
        (staging / "plan/defaults").rmdir()
    return notes
