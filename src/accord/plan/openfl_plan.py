"""Read an OpenFL 1.6-1.9 plan as Accord's: merge its ``defaults:`` files the way OpenFL does,
then turn each key and template into Accord's through plan/openfl_keys.py, noting each one.

OpenFL's layout differs from Accord's in three places: a section's settings are merged over
its defaults file's (Accord replaces them when the template differs), ``tasks`` lists the
tasks beside ``settings`` (Accord: under ``settings``), and a train task's ``aggregation_type``
chooses the aggregation (Accord: ``aggregator.settings.strategy``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from accord.errors import PlanError
from accord.plan.openfl_keys import (
    ADAPTIVE_SETTINGS,
    AGGREGATION_FUNCTIONS,
    KEYS,
    TASK_FUNCTIONS,
    TEMPLATES,
    openfl_class,
)
from accord.plan.schema import SECTIONS

_SECTION_KEYS = frozenset({"defaults", "template", "settings"})


@dataclass(frozen=True)
class Note:
    """One OpenFL key or template and what became of it (``warned``: accepted, no meaning)."""

    key: str
    detail: str
    warned: bool = False

    def line(self) -> str:
        return f"{self.key}: {self.detail}"


#: reads a section's ``defaults:`` file: (section name, the section) -> its mapping
DefaultsReader = Callable[[str, Mapping[str, Any]], dict[str, Any]]


def is_openfl_plan(raw: Mapping[str, Any], read_defaults: DefaultsReader) -> bool:
    """Whether a plan is OpenFL's: an ``openfl.*`` template in it or its defaults files, a
    ``connector`` section, or tasks listed beside ``settings``."""
    if "connector" in raw:
        return True
    for name in SECTIONS:
        section = raw.get(name)
        if not isinstance(section, Mapping):
            continue
        if openfl_class(section.get("template")) or (name == "tasks" and set(section) - _SECTION_KEYS):
            return True
        if isinstance(section.get("defaults"), str):
            found = read_defaults(name, section)
            if openfl_class(found.get("template")) or (name == "tasks" and set(found) - _SECTION_KEYS):
                return True
    return False


def _mapping(where: str, value: Any) -> dict[str, Any]:
    """``value`` (None: empty) as a dict; PlanError naming ``where`` if it is not a mapping."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise PlanError(f"OpenFL key {where} is {value!r}, not a mapping", f"write {where} as key: value lines")
    return dict(value)


def _merge(name: str, defaults: Mapping[str, Any], section: Mapping[str, Any]) -> dict[str, Any]:
    """OpenFL's merge: the section's settings over the defaults', then its other keys over theirs."""
    merged = copy.deepcopy(dict(defaults))
    settings = _mapping(f"{name}.settings", merged.get("settings"))
    settings.update(copy.deepcopy(_mapping(f"{name}.settings", section.get("settings"))))
    merged.update(copy.deepcopy(dict(section)))
    merged["settings"] = settings
    merged.pop("defaults", None)
    return merged


def _set(plan: dict[str, Any], dotted: str, value: Any) -> None:
    node = plan
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


class _Translation:
    def __init__(self) -> None:
        self.notes: list[Note] = []
        self.plan: dict[str, Any] = {}

    def note(self, key: str, detail: str, warned: bool = False) -> None:
        self.notes.append(Note(key, detail, warned))

    def template(self, name: str, section: dict[str, Any]) -> None:
        template = section.get("template")
        cls = openfl_class(template)
        if cls is None:
            return
        known = TEMPLATES.get(name, {}).get(cls)
        if known is None:
            allowed = ", ".join(sorted(TEMPLATES.get(name, {}))) or "none"
            raise PlanError(
                f"OpenFL template {name}.template {template}: Accord has no equivalent for the {name} section",
                f"use one OpenFL's names Accord maps ({allowed}), one of Accord's own, or the workspace's src.module.Class",
            )
        if known.why:
            raise PlanError(f"OpenFL template {name}.template {template} {known.why}", known.fix)
        if known.accord is None:
            section.pop("template")
        else:
            section["template"] = known.accord
        for key, value in (known.extra or {}).items():
            section.setdefault("settings", {})[key] = value
        shown = known.accord or (f"settings {known.extra}" if known.extra else f"Accord's own {name} (no template)")
        self.note(f"{name}.template {template}", f"-> {shown}")

    def settings(self, name: str, section: dict[str, Any]) -> None:
        settings = section.get("settings") or {}
        kept: dict[str, Any] = {}
        for key, value in settings.items():
            dotted = f"{name}.settings.{key}"
            rule = KEYS.get(dotted)
            if rule is None:
                kept[key] = value
                continue
            outcome = rule(dotted, value)
            if (outcome.target, outcome.value) != (dotted, value):  # a key Accord spells alike is no news
                self.note(dotted, outcome.detail, outcome.warned)
            if outcome.target is not None:
                target_section, _, rest = outcome.target.partition(".settings.")
                if target_section == name:
                    _set(kept, rest, outcome.value)
                else:
                    _set(self.plan, outcome.target, outcome.value)
        section["settings"] = kept

    def tasks(self, section: dict[str, Any]) -> dict[str, Any]:
        extra = section.get("settings") or {}
        if extra and all(isinstance(spec, Mapping) and "function" in spec for spec in extra.values()):
            section = {**extra, **{k: v for k, v in section.items() if k != "settings"}}  # Accord's layout
            extra = {}
        if extra:
            raise PlanError(
                f"OpenFL key tasks.settings {sorted(extra)}: Accord's tasks take no shared settings "
                "(OpenFL uses them for Flower interoperability)",
                "remove tasks.settings",
            )
        tasks: dict[str, Any] = {}
        for task, spec in section.items():
            if task in _SECTION_KEYS:
                continue
            if not isinstance(spec, Mapping):
                raise PlanError(f"OpenFL task tasks.{task} must be a mapping with function and kwargs")
            spec = dict(spec)
            function = spec.get("function")
            if function not in TASK_FUNCTIONS:
                raise PlanError(
                    f"OpenFL task tasks.{task}.function {function!r}: Accord's task runners have train and validate only",
                    "use train_task or validate_task (or remove the task)",
                )
            if TASK_FUNCTIONS[function] != function:
                self.note(f"tasks.{task}.function {function}", f"-> {TASK_FUNCTIONS[function]}")
            if "aggregation_type" in spec:
                self.aggregation(task, spec.pop("aggregation_type"))
            unknown = sorted(set(spec) - {"function", "kwargs"})
            if unknown:
                raise PlanError(f"OpenFL task tasks.{task} has keys {unknown} Accord does not know", "remove them")
            tasks[task] = {"function": TASK_FUNCTIONS[function], "kwargs": _mapping(f"tasks.{task}.kwargs", spec.get("kwargs"))}
        self.note("tasks", f"OpenFL's layout -> tasks.settings ({', '.join(tasks)})")
        return {"settings": tasks}

    def aggregation(self, task: str, aggregation: Any) -> None:
        key = f"tasks.{task}.aggregation_type"
        template = aggregation.get("template") if isinstance(aggregation, Mapping) else aggregation
        known = AGGREGATION_FUNCTIONS.get(openfl_class(template) or "")
        if known is None:
            raise PlanError(
                f"OpenFL key {key} {template!r}: not one of OpenFL's aggregation functions Accord maps "
                f"({', '.join(sorted(AGGREGATION_FUNCTIONS))})",
                "remove it (WeightedAverage is the default) or set aggregator.settings.strategy",
            )
        if known.why:
            raise PlanError(f"OpenFL key {key} {template}: {known.why}", known.fix)
        given = dict(aggregation.get("settings") or {}) if isinstance(aggregation, Mapping) else {}
        settings: dict[str, Any] = {}
        for name, value in given.items():
            target = ADAPTIVE_SETTINGS.get(name)
            if target is None:
                raise PlanError(
                    f"OpenFL key {key}.settings.{name}: Accord's {known.accord} has no such setting",
                    "remove it, or set aggregator.settings.strategy.settings (docs/plan.md)",
                )
            if isinstance(target, str):
                settings[target] = value
            elif not isinstance(value, list | tuple) or len(value) != len(target):
                raise PlanError(
                    f"OpenFL key {key}.settings.{name} must be a pair, got {value!r}", "write e.g. betas: [0.9, 0.99]"
                )
            else:
                settings.update(zip(target, value, strict=True))
        _set(self.plan, "aggregator.settings.strategy", {"template": known.accord, "settings": settings})
        self.note(f"{key} {template}", f"-> aggregator.settings.strategy {known.accord} {settings or ''}".rstrip())

    def stragglers(self, section: dict[str, Any]) -> None:
        """OpenFL's cut-off policies default to an infinite cut-off, under which they wait for every site."""
        settings = section.get("settings") or {}
        if settings.get("policy") == "cutoff_time" and settings.get("cutoff_seconds") is None:
            settings["policy"] = "wait_for_all"
            self.note(
                "straggler_handling_policy.settings.straggler_cutoff_time",
                "infinite or unset: -> policy wait_for_all (OpenFL's policy waits for every site then)",
            )

    def assigner(self, section: dict[str, Any]) -> None:
        groups = (section.get("settings") or {}).get("task_groups")
        if not isinstance(groups, list):
            return
        kept = []
        for group in groups:
            if isinstance(group, Mapping) and group.get("percentage") == 0:
                self.note(
                    f"assigner.settings.task_groups {group.get('name')!r}",
                    "dropped: a group of 0% of the sites is given none",
                )
                continue
            kept.append(group)
        section["settings"]["task_groups"] = kept


def from_openfl(raw: Mapping[str, Any], read_defaults: DefaultsReader) -> tuple[dict[str, Any], list[Note]]:
    """An OpenFL plan as an Accord plan mapping (defaults merged in), and a note per key it changed."""
    if "connector" in raw:
        raise PlanError(
            "OpenFL section connector (Flower interoperability): Accord runs the workspace's own task runner only",
            "remove the connector section",
        )
    work = _Translation()
    for name, value in raw.items():
        if name not in SECTIONS:
            work.plan[name] = copy.deepcopy(value)
            continue
        if not isinstance(value, Mapping):
            raise PlanError(f"plan section {name} must be a mapping with defaults/template/settings")
        defaults = read_defaults(name, value) if isinstance(value.get("defaults"), str) else {}
        if defaults:
            work.note(f"{name}.defaults {value['defaults']}", "merged under the section, as OpenFL does")
        section = _merge(name, defaults, value)
        if name == "tasks":
            section = work.tasks(section)
        else:
            work.template(name, section)
            work.settings(name, section)
            if name == "assigner":
                work.assigner(section)
            if name == "straggler_handling_policy":
                work.stragglers(section)
            if name == "compression_pipeline" and "template" not in section and section.get("settings") == {}:
                section.pop("settings")
        if not section.get("settings"):
            section.pop("settings", None)
        existing = work.plan.get(name, {})
        work.plan[name] = _deep_update(section, existing)
    return work.plan, work.notes


def _deep_update(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value
    return base
