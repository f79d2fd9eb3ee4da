"""Which classes a plan's ``template:`` may name, checked before anything is imported.

A template is code that runs at every site, so a plan may name only Accord's own classes of
the section's kind (listed here by name: nothing is imported to check them) or a class in
the workspace's own ``src`` package, whose files the workspace hash covers
(plan/identity.py). Anything else (``os.system``, ``subprocess.run``, another installed
module, an Accord object of another kind, a name with odd characters) is refused.
"""

from __future__ import annotations

import re

from accord.errors import PlanError

#: Accord's own templates for each section that is built from one.
ACCORD_TEMPLATES: dict[str, frozenset[str]] = {
    "assigner": frozenset(
        {
            "accord.aggregator.assigner.RandomGroupedAssigner",
            "accord.aggregator.assigner.StaticGroupedAssigner",
        }
    ),
    "data_loader": frozenset(
        {
            "accord.data.DigitsDataLoader",
            "accord.data.BreastCancerDataLoader",
            "accord.data.NpzDataLoader",
            "accord.data.CSVDataLoader",
            "accord.data.ImageFolderDataLoader",
            "accord.data.builtin.DigitsDataLoader",
            "accord.data.builtin.BreastCancerDataLoader",
            "accord.data.npz.NpzDataLoader",
            "accord.data.csv_file.CSVDataLoader",
            "accord.data.image_folder.ImageFolderDataLoader",
            "accord.interactive.data.site_data",
        }
    ),
    "task_runner": frozenset(
        {
            "accord.runners.torch_runner.TorchTaskRunner",
            "accord.runners.keras_runner.KerasTaskRunner",
            "accord.runners.numpy_runner.SklearnLinearRunner",
            "accord.interactive.torch_runner.TorchInteractiveRunner",
            "accord.interactive.keras_runner.KerasInteractiveRunner",
        }
    ),
}

#: ``src.module[.sub...].Name``: identifiers only, so no ``..``, slashes or odd characters.
WORKSPACE_TEMPLATE = re.compile(r"src(\.[A-Za-z_][A-Za-z0-9_]*){2,}")

#: Accord's strategies: ``accord.strategies.Name`` or ``accord.strategies.module.Name``; the
#: builder (plan/strategy.py) also checks that what it imports is a Strategy class.
ACCORD_STRATEGY = re.compile(r"accord\.strategies(\.[a-z_][a-z0-9_]*)?\.[A-Z][A-Za-z0-9]*")


#: Accord's client mods: ``accord.mods.Name`` or ``accord.mods.module.Name``; the builder
#: (plan/mods.py) also checks that what it imports is a Mod class.
ACCORD_MOD = re.compile(r"accord\.mods(\.[a-z_][a-z0-9_]*)?\.[A-Z][A-Za-z0-9]*")

#: the kinds whose Accord templates are named by pattern, with an example for the refusal
_PATTERNS: dict[str, tuple[re.Pattern[str], str]] = {
    "strategy": (ACCORD_STRATEGY, "accord.strategies.Name, e.g. accord.strategies.FedAvg"),
    "mod": (ACCORD_MOD, "accord.mods.Name, e.g. accord.mods.ClipUpdate"),
}


def template_problem(section: str, template: str) -> str | None:
    """Why ``template`` may not be ``section``'s template, or None if it may."""
    if section in _PATTERNS:
        pattern, example = _PATTERNS[section]
        if pattern.fullmatch(template) or WORKSPACE_TEMPLATE.fullmatch(template):
            return None
        return (
            f"{template!r} is not allowed: a {section} template names one of Accord's "
            f"({example}) or a class in the workspace's src package (src.module.Class)"
        )
    allowed = ACCORD_TEMPLATES.get(section)
    if allowed is None:
        return f"the {section} section is not built from a template; remove the key"
    if template in allowed or WORKSPACE_TEMPLATE.fullmatch(template):
        return None
    return (
        f"{template!r} is not allowed: a {section} template names one of Accord's "
        f"({', '.join(sorted(allowed))}) or a class in the workspace's src package (src.module.Class)"
    )


def check_template(section: str, template: str) -> None:
    """PlanError naming the section and the allowed templates unless ``template`` is one."""
    why = template_problem(section, template)
    if why:
        raise PlanError(f"{section}.template: {why}", f"set {section}.template to an allowed class")
