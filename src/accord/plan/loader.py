"""Load a plan: merge packaged defaults under each section, apply dotted overrides, validate, hash."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from accord.errors import PlanError
from accord.plan.openfl_plan import Note, from_openfl, is_openfl_plan
from accord.plan.schema import SECTIONS, PlanModel
from accord.plan.sink_settings import is_tracking_server
from accord.plan.templates import WORKSPACE_TEMPLATE

DEFAULTS_DIR = Path(__file__).parent / "defaults"


def read_yaml(path: Path, what: str = "plan") -> dict[str, Any]:
    """Read a YAML mapping with safe_load; a clear PlanError on any problem."""
    if not path.is_file():
        raise PlanError(f"{what} file {path} does not exist", "check the path, or run `fx workspace create`")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise PlanError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError(f"{what} file {path} cannot be read: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PlanError(f"{path}: expected a mapping of sections at the top level, got {type(data).__name__}")
    return data


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """Turn ``["aggregator.settings.rounds_to_train=5"]`` into ``{dotted_key: yaml_value}``."""
    result: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise PlanError(
                f"override {item!r} is not KEY=VALUE",
                "write e.g. aggregator.settings.rounds_to_train=5",
            )
        if key.strip().split(".")[0] == "hash":
            raise PlanError(f"override {item!r}: the plan's hash cannot be overridden", "freeze the plan with `fx plan freeze`")
        try:
            result[key.strip()] = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as exc:
            raise PlanError(f"override {item!r}: the value is not valid YAML ({getattr(exc, 'problem', exc)})") from exc
    return result


def apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Set each dotted key in a deep copy of ``data``, creating mappings on the way."""
    result = copy.deepcopy(data)
    for dotted, value in overrides.items():
        node = result
        parts = dotted.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(parts[: i + 1])
                raise PlanError(f"override {dotted}: {where} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return result


def _deep_merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _defaults_for(name: str, section: Mapping[str, Any], workspace: Path) -> dict[str, Any]:
    ref = section.get("defaults")
    if ref is None:
        packaged = DEFAULTS_DIR / f"{name}.yaml"
        return read_yaml(packaged, "defaults") if packaged.is_file() else {}
    if not isinstance(ref, str):
        raise PlanError(f"{name}.defaults must be a file name, got {ref!r}")
    inside = (workspace / ref).resolve()
    if not inside.is_relative_to(workspace.resolve()):
        raise PlanError(
            f"{name}.defaults names {ref}, which lies outside the workspace",
            "keep defaults files inside the workspace (plan/ or src/)",
        )
    for candidate in (inside, DEFAULTS_DIR / Path(ref).name):
        if candidate.is_file():
            return read_yaml(candidate, "defaults")
    raise PlanError(
        f"{name}.defaults names {ref}, found neither in the workspace nor among Accord's defaults",
        f"fix the path or remove the key to use {DEFAULTS_DIR / (name + '.yaml')}",
    )


def resolve(raw: Mapping[str, Any], workspace: Path) -> dict[str, Any]:
    """Merge the defaults of every section under what the plan says."""
    unknown = [k for k in raw if k not in SECTIONS and k not in ("collaborators", "hash")]
    if unknown:
        raise PlanError(f"unknown top-level plan keys {unknown}; expected some of {list(SECTIONS)}")
    resolved: dict[str, Any] = {k: copy.deepcopy(v) for k, v in raw.items() if k not in SECTIONS}
    for name in SECTIONS:
        section = raw.get(name) or {}
        if not isinstance(section, Mapping):
            raise PlanError(f"plan section {name} must be a mapping with defaults/template/settings")
        defaults = _defaults_for(name, section, workspace)
        if section.get("template") not in (None, defaults.get("template")):
            defaults.pop("settings", None)  # another class: the defaults' settings are not its arguments
        resolved[name] = _deep_merge(defaults, section)
        resolved[name].pop("defaults", None)
    return resolved


def _format_errors(source: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        got = f" (got {err['input']!r})" if "input" in err and not isinstance(err["input"], dict) else ""
        lines.append(f"{source}: {key}: {err['msg']}{got}")
    return "; ".join(lines)


#: top-level keys outside the hash: the hash itself, and the membership list, which the
#: CA's operator extends as sites are certified (identity is the certificate's business).
UNHASHED = frozenset({"hash", "collaborators"})


def plan_hash(model: PlanModel) -> str:
    """SHA-384 of the canonical JSON of the resolved plan, UNHASHED keys left out."""
    canonical = json.dumps(
        model.model_dump(mode="json", exclude=set(UNHASHED)), sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha384(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Plan:
    """A validated plan, where it lives and its hash (the federation's identity)."""

    model: PlanModel
    workspace: Path
    path: Path | None
    hash: str
    #: what became of each OpenFL key, for a plan written for OpenFL (plan/openfl_plan.py)
    openfl_notes: tuple[Note, ...] = ()

    def resolve_path(self, relative: str, key: str = "a plan path") -> Path:
        """A path from the plan, relative to the workspace; PlanError if it leads out of it."""
        return inside_workspace(self.workspace, relative, key)

    def workspace_hash(self) -> str:
        """The workspace hash (plan/identity.py): read from the files on each call, so compute it once."""
        from accord.plan.identity import workspace_hash

        return workspace_hash(self.hash, self.workspace)

    @property
    def rounds(self) -> int:
        return self.model.aggregator.settings.rounds_to_train

    def strategy(self) -> Any:
        """A fresh instance of the plan's aggregation strategy (plan/strategy.py), wrapped in
        SecureAggregation when ``aggregator.settings.secure_aggregation.enabled``."""
        from accord.plan.strategy import build_strategy, secured

        settings = self.model.aggregator.settings
        return secured(build_strategy(settings.strategy.model_dump(), self.workspace), settings.secure_aggregation)

    def mods(self) -> list[Any]:
        """Fresh instances of the plan's client mods, in order (plan/mods.py)."""
        from accord.plan.mods import build_mods

        return build_mods(self.model.collaborator.settings.mods, self.workspace)


#: every path-valued plan setting; each must stay inside the workspace (data paths are the
#: site's own, in data.yaml, not the plan's: they may point anywhere).
PLAN_PATHS = (
    "aggregator.settings.init_state_path",
    "aggregator.settings.best_state_path",
    "aggregator.settings.last_state_path",
    "aggregator.settings.metrics_path",
    "aggregator.settings.state_dir",
    "collaborator.settings.data_config_path",
    "network.settings.cert_dir",
    "aggregator.settings.metrics.tensorboard.log_dir",
    "aggregator.settings.metrics.mlflow.tracking_uri",
)


def inside_workspace(workspace: Path, relative: str | os.PathLike, key: str) -> Path:
    """``relative`` resolved (``..`` and symbolic links followed) under ``workspace``; PlanError if outside."""
    root = Path(workspace).resolve()
    resolved = (root / relative).resolve()
    if not resolved.is_relative_to(root):
        raise PlanError(
            f"{key} is {str(relative)!r}, which leads outside the workspace {root} (to {resolved})",
            f"set {key} to a path inside the workspace, such as the default",
        )
    return resolved


def _plan_value(model: PlanModel, key: str) -> Any:
    """The setting at dotted ``key``; None under a section that is off (a metrics sink: null)."""
    value: Any = model
    for part in key.split("."):
        if value is None:
            return None
        value = getattr(value, part)
    return value


def _check_paths(model: PlanModel, workspace: Path, source: str) -> None:
    for key in PLAN_PATHS:
        value = _plan_value(model, key)
        if value is None or is_tracking_server(value):
            continue
        try:
            inside_workspace(workspace, value, key)
        except PlanError as exc:
            raise PlanError(f"{source}: {exc.message}", exc.fix) from None


def validate_plan(
    data: Mapping[str, Any], workspace: Path, source: str = "plan", path: Path | None = None
) -> Plan:
    """Resolve defaults, validate and hash an in-memory plan mapping (an OpenFL plan translated first)."""
    data, notes = openfl_to_accord(data, workspace)
    resolved = resolve(data, workspace)
    try:
        model = PlanModel.model_validate(resolved)
    except ValidationError as exc:
        raise PlanError(_format_errors(source, exc), "edit the plan or the override") from exc
    _check_paths(model, workspace, source)
    digest = plan_hash(model)
    if model.hash is not None and model.hash != digest:
        raise PlanError(
            f"{source} was changed after it was frozen (frozen hash {model.hash[:16]}..., "
            f"now {digest[:16]}...)",
            "restore the frozen plan, or remove its hash and run `fx plan freeze` again",
        )
    plan = Plan(model=model, workspace=workspace, path=path, hash=digest, openfl_notes=tuple(notes))
    check_objects(plan)
    _report(notes, source)
    return plan


def openfl_to_accord(data: Mapping[str, Any], workspace: Path) -> tuple[Mapping[str, Any], list[Note]]:
    """``data`` translated to Accord's plan if it is OpenFL's (with a note per key), else as it is."""

    def read_defaults(name: str, section: Mapping[str, Any]) -> dict[str, Any]:
        return _defaults_for(name, section, workspace)

    if not is_openfl_plan(data, read_defaults):
        return data, []
    return from_openfl(data, read_defaults)


_LOG = logging.getLogger("accord.plan")
#: the OpenFL notes already logged by this process: each is said once however often a plan loads
_REPORTED: set[str] = set()


def _report(notes: Iterable[Note], source: str) -> None:
    for note in notes:
        line = f"{source}: OpenFL {note.line()}"
        if line in _REPORTED:
            continue
        _REPORTED.add(line)
        if note.warned:
            _LOG.warning(line)
        else:
            _LOG.info(line)


def check_objects(plan: Plan) -> None:
    """Build the plan's strategy and client mods once, so a wrong template or setting fails when
    the plan loads: only Accord's own; the workspace's code (``src.*``) is never imported by
    loading a plan (it may come from an archive not yet approved), only allow-listed by name."""
    from accord.plan.strategy import names_workspace_code

    secure = plan.model.aggregator.settings.secure_aggregation
    if secure.enabled and plan.model.compression_pipeline.settings.upload:
        raise PlanError(
            f"{plan.path or 'the plan'}: compression_pipeline.settings.upload is set, but secure aggregation "
            "sends each update masked (masked values do not compress)",
            "remove compression_pipeline.settings.upload, or set aggregator.settings.secure_aggregation.enabled: false",
        )
    if secure.enabled and plan.model.collaborator.settings.opt_treatment == "CONTINUE_GLOBAL":
        raise PlanError(
            f"{plan.path or 'the plan'}: collaborator.settings.opt_treatment is CONTINUE_GLOBAL, but secure aggregation "
            "sums the model's changes only (optimizer state, such as step counts, is not clipped and masked with them)",
            "set collaborator.settings.opt_treatment to RESET or CONTINUE_LOCAL, or set "
            "aggregator.settings.secure_aggregation.enabled: false",
        )
    if not names_workspace_code(plan.model.aggregator.settings.strategy.model_dump()):
        plan.strategy()
    if not any(WORKSPACE_TEMPLATE.fullmatch(mod.template) for mod in plan.model.collaborator.settings.mods):
        plan.mods()


def load_plan(
    path: str | os.PathLike,
    overrides: Mapping[str, Any] | None = None,
    workspace: str | os.PathLike | None = None,
) -> Plan:
    """Load ``plan.yaml``; the workspace defaults to the plan file's grandparent (``ws/plan/plan.yaml``)."""
    plan_path = Path(path).resolve()
    root = Path(workspace).resolve() if workspace else plan_path.parent.parent
    raw = with_cols_yaml(apply_overrides(read_yaml(plan_path), overrides or {}), plan_path)
    return validate_plan(raw, root, source=str(plan_path), path=plan_path)


COLS_YAML = "cols.yaml"


def with_cols_yaml(raw: dict[str, Any], plan_path: Path) -> dict[str, Any]:
    """OpenFL keeps the collaborators list in plan/cols.yaml: read it when the plan has none."""
    cols = plan_path.parent / COLS_YAML
    if "collaborators" in raw or not cols.is_file():
        return raw
    names = read_yaml(cols, "collaborators list").get("collaborators") or []
    if not isinstance(names, list):
        raise PlanError(f"{cols}: collaborators must be a list of names", "write collaborators: [one, two]")
    return {**raw, "collaborators": names}


def update_plan_file(path: Path, overrides: Mapping[str, Any]) -> None:
    """Write dotted overrides into a plan file, keeping its other content, order and comments.

    A frozen (read-only) plan may only have its UNHASHED keys changed; its mode is kept.
    """
    from ruamel.yaml import YAML

    read_yaml(path)  # a clear PlanError for a missing or broken file
    editor = YAML(typ="rt")
    editor.preserve_quotes = True
    data = apply_overrides(editor.load(path.read_text(encoding="utf-8")) or {}, overrides)
    mode = path.stat().st_mode
    if not mode & 0o200:  # frozen: read-only by mode (root could write anyway)
        if any(key.split(".")[0] not in UNHASHED for key in overrides):
            raise PlanError(f"{path} is frozen (read-only)", "unfreeze it by hand, or change a copy (fx plan save)")
        path.chmod(mode | 0o200)
    text = io.StringIO()
    editor.dump(data, text)
    try:
        path.write_text(text.getvalue(), encoding="utf-8")
    finally:
        path.chmod(mode)


def add_collaborator(path: Path, name: str) -> bool:
    """Add ``name`` to the plan's collaborators list (frozen plans too); False if already there."""
    raw = read_yaml(path)
    cols = path.parent / COLS_YAML
    if "collaborators" not in raw and cols.is_file():  # OpenFL's layout: the list lives in cols.yaml
        names = list(with_cols_yaml(raw, path)["collaborators"])
        if name in names:
            return False
        update_plan_file(cols, {"collaborators": [*names, name]})
        return True
    names = list(raw.get("collaborators") or [])
    if name in names:
        return False
    update_plan_file(path, {"collaborators": [*names, name]})
    return True
