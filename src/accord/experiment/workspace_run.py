"""``fx run``'s set-up: a copy of any workspace, made a local federation on this machine.

The user's workspace is only read. Its plan (a frozen one too), ``src/``,
``requirements.txt`` and initial model are copied into a scratch folder
(``WS/.accord-run`` by default, which ``fx workspace export`` never ships), and the copy
gets what a local federation needs: its members, 127.0.0.1 and a free port, each site's data
path in its own data.yaml, and a fresh CA with every certificate. The workspace's own
``cert/``, ``plan/data.yaml``, ``save/`` and ``logs/`` are never touched, so it stays ready for a
real deployment.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from accord.collaborator.data_config import read_data_config
from accord.errors import AccordError
from accord.experiment.local import check_local_sites, configure_federation
from accord.plan.identity import BYTECODE_DIR
from accord.plan.loader import Plan, load_plan, read_yaml

#: the file that marks a scratch folder as fx run's own (so the next run may replace it)
MARKER = "fx-run.txt"
DEFAULT_SCRATCH = ".accord-run"
_COUNT = "collaborator_count"
#: overrides after which the workspace's saved initial model no longer fits the plan
_MODEL_KEYS = ("task_runner", "collaborator.settings.opt_treatment")


@dataclass(frozen=True)
class RunSetup:
    """The copy's plan, and what it came from."""

    plan: Plan
    source: Plan
    frozen: bool
    #: the sites are the ones the workspace's data.yaml names (its plan lists none)
    sites_from_data_config: bool = False


def parse_data_paths(items: tuple[str, ...]) -> dict[str, str]:
    """``("site1=/data/a.npz",)`` -> ``{"site1": "/data/a.npz"}``; one line per mistake."""
    paths: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise AccordError(f"--data-path {item!r} is not NAME=PATH", "write e.g. --data-path collaborator1=/data/site1.npz")
        if name.strip() in paths:
            raise AccordError(f"--data-path names {name.strip()!r} twice", "give each collaborator one data path")
        paths[name.strip()] = path.strip()
    return paths


def _data_entries(source: Plan) -> tuple[Path, dict[str, str]]:
    """The workspace's data config file and its entries (none when it is absent)."""
    config = source.resolve_path(source.model.collaborator.settings.data_config_path)
    return config, (read_data_config(config) if config.is_file() else {})


def site_names(source: Plan, collaborators: int | None) -> tuple[list[str], bool]:
    """Which sites run, and whether their names came from the data config.

    The plan's collaborators when it lists some and no count is given; else, with no count,
    the sites the workspace's data.yaml names (an OpenFL workspace's ``one,1`` lines, its
    cols.yaml empty); else collaborator1..N (2 by default). A count under which none of the
    sites data.yaml names would run is refused: its lines would be silently ignored.
    """
    if collaborators is None and source.model.collaborators:
        check_local_sites(len(source.model.collaborators))
        return list(source.model.collaborators), False
    config, entries = _data_entries(source)
    if collaborators is None and entries:
        check_local_sites(len(entries))
        return list(entries), True
    count = 2 if collaborators is None else collaborators
    check_local_sites(count)
    names = [f"collaborator{i}" for i in range(1, count + 1)]
    if entries and not set(entries) & set(names):
        raise AccordError(
            f"{config} names the sites {', '.join(entries)}, none of which --collaborators {count} "
            f"({', '.join(names)}) would run",
            f"drop --collaborators to run the sites {config.name} names ({', '.join(entries)}), "
            "or name them collaborator1..N there",
        )
    return names, False


def _as_given(value: str | int) -> str | int:
    """A relative data path that exists here, made absolute (the sites run in the copy); others as they are."""
    if isinstance(value, str) and not Path(value).is_absolute() and Path(value).exists():
        return str(Path(value).resolve())
    return value


def site_data_paths(source: Plan, names: list[str], given: Mapping[str, str]) -> dict[str, str | int]:
    """Each site's data path: ``--data-path``, else the workspace's data.yaml entry, else (a loader that
    shards, with ``collaborator_count``) its shard number 1..N."""
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise AccordError(
            f"--data-path names {', '.join(unknown)}, not among this run's collaborators {', '.join(names)}",
            "name one of them, or set the collaborators with --collaborators N (collaborator1..N)",
        )
    config, entries = _data_entries(source)
    shards = _COUNT in dict(source.model.data_loader.settings)
    paths: dict[str, str | int] = {}
    for number, name in enumerate(names, start=1):
        if name in given:
            paths[name] = _as_given(given[name])
        elif name in entries:
            paths[name] = _as_given(entries[name])
        elif shards:
            paths[name] = number
        else:
            template = source.model.data_loader.template
            raise AccordError(
                f"collaborator {name} has no data: the data loader {template} takes a data path per site",
                f"pass --data-path {name}=PATH for each collaborator (or add `{name}: PATH` to {config})",
            )
    return paths


def _scratch_folder(workspace: Path, scratch: Path | None) -> Path:
    """The run's folder, emptied: a new one, or one an earlier fx run made (its marker file)."""
    folder = (Path(scratch) if scratch is not None else workspace / DEFAULT_SCRATCH).resolve()
    owned = [workspace / part for part in ("plan", "src", "cert", "save", "logs")]
    if workspace.is_relative_to(folder) or any(folder.is_relative_to(part) for part in owned):
        raise AccordError(
            f"--scratch {folder} would hold or lie inside the workspace's own files",
            f"pass a folder of its own (the default is {workspace / DEFAULT_SCRATCH})",
        )
    if folder.exists():
        if not (folder / MARKER).is_file() and (not folder.is_dir() or any(folder.iterdir())):
            raise AccordError(
                f"{folder} exists and is not a folder fx run made (no {MARKER} in it)",
                "pass an empty or new folder with --scratch, or remove that one",
            )
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def _copy_workspace(workspace: Path, folder: Path) -> bool:
    """Copy plan/ (without the site's data.yaml), src/ and requirements.txt; return whether the plan was frozen.

    The copy's plan is writable and carries no hash: it is this run's plan, never the federation's.
    """
    ignore = shutil.ignore_patterns(BYTECODE_DIR, "*.pyc", "*.pyo")  # bytecode: the sources are copied
    shutil.copytree(workspace / "plan", folder / "plan", ignore=ignore)
    if (workspace / "src").is_dir():
        shutil.copytree(workspace / "src", folder / "src", ignore=ignore)
    if (workspace / "requirements.txt").is_file():
        shutil.copyfile(workspace / "requirements.txt", folder / "requirements.txt")
    (folder / "plan" / "data.yaml").unlink(missing_ok=True)
    plan_file = folder / "plan" / "plan.yaml"
    plan_file.chmod(0o644)
    raw = read_yaml(plan_file)
    frozen = raw.pop("hash", None) is not None
    if frozen:
        plan_file.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    (folder / MARKER).write_text(
        f"Made by `fx run` from the workspace {workspace}: a copy of its plan and code, a CA and\n"
        "certificates for this machine only, models, metrics and logs. The next fx run replaces it.\n",
        encoding="utf-8",
    )
    return frozen


def prepare_run(
    workspace: Path,
    *,
    collaborators: int | None = None,
    rounds: int | None = None,
    data_paths: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    scratch: Path | None = None,
) -> RunSetup:
    """Copy ``workspace`` into the scratch folder and make the copy a local federation (module docstring)."""
    root = Path(workspace).resolve()
    source = load_plan(root / "plan" / "plan.yaml", workspace=root)
    if rounds is not None and rounds < 1:
        raise AccordError(f"--rounds is {rounds}; it must be at least 1", "pass e.g. --rounds 3")
    names, from_data_config = site_names(source, collaborators)
    paths = site_data_paths(source, names, data_paths or {})
    given = dict(overrides or {})
    changes: dict[str, Any] = {}
    if rounds is not None:
        changes["aggregator.settings.rounds_to_train"] = rounds
    if _COUNT in dict(source.model.data_loader.settings) and not from_data_config:
        # data.yaml's own shard numbers count among the plan's collaborator_count, as in OpenFL
        changes[f"data_loader.settings.{_COUNT}"] = len(names)
    changes.update(given)
    init = source.resolve_path(source.model.aggregator.settings.init_state_path)
    model_changed = any(key.startswith(_MODEL_KEYS) for key in given)
    folder = _scratch_folder(root, scratch)
    frozen = _copy_workspace(root, folder)
    plan = configure_federation(folder, paths, changes, init if init.is_file() and not model_changed else None)
    return RunSetup(plan=plan, source=source, frozen=frozen, sites_from_data_config=from_data_config)
