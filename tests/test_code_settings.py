"""Plan settings that name code may name only the workspace's src package or the narrow framework
namespaces of plan/code_settings.py: refused when the plan loads, and again before any import."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from accord.errors import AccordError, PlanError
from accord.plan.code_settings import CODE_SETTINGS, code_problem, import_code, named_code
from accord.plan.loader import load_plan, validate_plan

MODEL, LOSS, ESTIMATOR, OPTIMIZER = (f"task_runner.settings.{k}" for k in ("model", "loss", "estimator", "optimizer"))
TRAIN, VALIDATE = (f"task_runner.settings.functions.{k}.function" for k in ("train", "validate"))
INTERFACE = "data_loader.settings.interface"

#: a module that leaves a marker when imported: it must never be
MARKER_MODULE = "from pathlib import Path\nPath(__file__).with_name('IMPORTED').touch()\nsystem = print\n"


@pytest.mark.parametrize(
    "setting, value",
    [
        (MODEL, "os.system"),
        (MODEL, "subprocess.run"),
        (MODEL, "builtins.eval"),
        (MODEL, "importlib.import_module"),
        (MODEL, "pickle.loads"),
        (MODEL, "torch.hub.load"),
        (MODEL, "keras.utils.get_file"),
        (MODEL, "keras.models.load_model"),
        (MODEL, "torch.nn.utils.x"),  # one name directly under the namespace, no deeper
        (MODEL, "torch.nn..Linear"),
        (LOSS, "torch.nn.functional._Any"),  # public names only
        (MODEL, "accord.cli.main.main"),  # Accord's, but no model builder
        (MODEL, "mlp"),  # a model is always a path: no built-in names
        (MODEL, "src.build_model"),  # a module is needed: src.module.name
        (MODEL, "src/../evil.build"),
        (MODEL, "src.x.Ne t"),
        (LOSS, "os.system"),
        (LOSS, "torch.nn.CrossEntropyLoss"),  # a class, not a function (out, y) -> loss
        (LOSS, "torch.hub.load"),
        (ESTIMATOR, "sklearn.utils.x"),
        (ESTIMATOR, "subprocess.Popen"),
        (OPTIMIZER, "torch.hub.load"),
        (TRAIN, "os.system"),
        (VALIDATE, "accord.runners.torch_models.mlp"),  # task functions are the workspace's own
        (INTERFACE, "accord.data.DigitsDataLoader"),
        (INTERFACE, "evil.system"),
    ],
)
def test_each_setting_refuses_what_it_does_not_allow(setting: str, value: str) -> None:
    why = code_problem(setting, value)
    assert why is not None and setting in why and repr(value) in why and "src.module.name" in why, why


@pytest.mark.parametrize(
    "setting, value",
    [
        (MODEL, "src.model.build_model"),
        (MODEL, "accord.runners.torch_models.mlp"),
        (MODEL, "torch.nn.Linear"),
        (MODEL, "keras.applications.MobileNetV2"),
        (LOSS, "cross_entropy"),  # a built-in name, not a path
        (LOSS, "torch.nn.functional.nll_loss"),
        (LOSS, "src.losses.focal"),
        (ESTIMATOR, "SGDClassifier"),
        (ESTIMATOR, "sklearn.linear_model.Perceptron"),
        (OPTIMIZER, "torch.optim.Adam"),
        (TRAIN, "src.experiment.train"),
        (INTERFACE, "src.experiment.Shard"),
        (MODEL, print),  # an object passed in Python is no path
        (TRAIN, None),
    ],
)
def test_each_setting_allows_the_workspaces_code_and_its_namespaces(setting: str, value: Any) -> None:
    assert code_problem(setting, value) is None


def test_every_listed_namespace_exists() -> None:
    namespaces = {ns for rule in CODE_SETTINGS.values() for ns in rule.namespaces}
    assert namespaces == {"accord.runners.torch_models", "torch.nn", "torch.nn.functional", "torch.optim",
                          "keras.applications", "sklearn.linear_model"}
    for namespace in namespaces - {"keras.applications"}:  # importing keras is slow; find_spec imports parents
        assert importlib.util.find_spec(namespace) is not None, namespace


def test_named_code_walks_nested_settings_and_skips_what_is_absent() -> None:
    settings = {"model": "m.x", "functions": {"train": {"function": "t.x"}, "validate": "not a mapping"}, "loss": None}
    assert list(named_code("task_runner", settings)) == [(MODEL, "m.x"), (TRAIN, "t.x")]
    assert list(named_code("data_loader", "not a mapping")) == []
    assert list(named_code("assigner", {"model": "os.system"})) == []


@pytest.mark.parametrize(
    "section, settings, setting, value",
    [
        ("task_runner", {"model": "os.system"}, MODEL, "os.system"),
        ("task_runner", {"loss": "subprocess.run"}, LOSS, "subprocess.run"),
        ("task_runner", {"estimator": "pickle.loads"}, ESTIMATOR, "pickle.loads"),
        ("task_runner", {"functions": {"train": {"function": "os.system"}}}, TRAIN, "os.system"),
        ("data_loader", {"interface": "os.system"}, INTERFACE, "os.system"),
    ],
)
def test_a_plan_naming_foreign_code_in_a_setting_fails_to_load_with_one_line(
    tmp_path: Path, section: str, settings: dict[str, Any], setting: str, value: str
) -> None:
    with pytest.raises(PlanError) as refused:
        validate_plan({section: {"settings": settings}}, tmp_path, source="plan.yaml")
    text = str(refused.value)
    assert text.startswith(f"plan.yaml: {section}.settings") and f"{setting} is {value!r}, which is not allowed" in text
    assert "\n" not in text


def test_the_default_plan_and_the_packaged_workspaces_plans_load(tmp_path: Path) -> None:
    import accord.workspace

    assert validate_plan({}, tmp_path).model.task_runner.settings["model"] == "accord.runners.torch_models.mlp"
    plans = sorted(Path(accord.workspace.__file__).parent.glob("templates/*/plan/plan.yaml"))
    assert len(plans) >= 2
    for path in plans:
        assert load_plan(path).model.task_runner.settings["model"] == "src.model.build_model"


def test_every_site_that_imports_a_setting_checks_it_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Defence in depth: a runner given an unchecked value refuses it without importing it."""
    from accord.interactive.data import site_data
    from accord.interactive.runner import resolve
    from accord.runners._torch_parts import make_loss
    from accord.runners.numpy_runner import SklearnLinearRunner
    from accord.runners.torch_runner import TorchTaskRunner

    (tmp_path / "evil.py").write_text(MARKER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    attempts = [
        (MODEL, lambda: TorchTaskRunner("evil.system")),
        (LOSS, lambda: make_loss("evil.system")),
        (ESTIMATOR, lambda: SklearnLinearRunner(estimator="evil.system")),
        (INTERFACE, lambda: site_data("x", "evil.system")),
        (TRAIN, lambda: resolve("evil.system", TRAIN)),
        ("anything.else", lambda: import_code("anything.else", "evil.system")),  # unlisted: src only
    ]
    for setting, attempt in attempts:
        with pytest.raises(AccordError, match=f"{setting} is 'evil.system', which is not allowed"):
            attempt()
    assert not (tmp_path / "IMPORTED").exists()
    assert import_code(MODEL, "torch.nn.Linear").__name__ == "Linear"


def test_a_name_the_namespace_only_imports_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    import torch.nn.functional

    monkeypatch.setattr(torch.nn.functional, "system", os.system, raising=False)
    assert code_problem(LOSS, "torch.nn.functional.system") is None  # the name alone looks fine
    with pytest.raises(PlanError, match=r"torch.nn.functional.system', which is not allowed: it is (posix|nt)'s, not torch's"):
        import_code(LOSS, "torch.nn.functional.system")
