"""Plan loading: defaults, overrides, validation messages, hashing."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from accord.errors import PlanError
from accord.plan.loader import add_collaborator, load_plan, parse_overrides, update_plan_file, validate_plan


def write_plan(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "plan" / "plan.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_fill_every_section(tmp_path: Path) -> None:
    plan = load_plan(write_plan(tmp_path, {"collaborators": ["a", "b"]}))
    assert plan.rounds == 10
    assert plan.model.network.settings.agg_port == 50051
    assert set(plan.model.tasks.settings) == {"aggregated_model_validation", "train", "locally_tuned_model_validation"}
    assert plan.workspace == tmp_path.resolve()


def test_override_changes_value_and_hash(tmp_path: Path) -> None:
    path = write_plan(tmp_path, {"collaborators": ["a"]})
    base = load_plan(path)
    changed = load_plan(path, parse_overrides(["aggregator.settings.rounds_to_train=5"]))
    assert changed.rounds == 5
    assert changed.hash != base.hash
    assert len(base.hash) == 96  # SHA-384 hex


def test_hash_is_stable_across_key_order_and_explicit_defaults(tmp_path: Path) -> None:
    first = validate_plan({"collaborators": ["a"], "aggregator": {"settings": {"rounds_to_train": 10}}}, tmp_path)
    second = validate_plan({"aggregator": {"settings": {"rounds_to_train": 10}}, "collaborators": ["a"]}, tmp_path)
    third = validate_plan({"collaborators": ["a"]}, tmp_path)
    assert first.hash == second.hash == third.hash


def test_error_names_file_key_and_expectation(tmp_path: Path) -> None:
    path = write_plan(tmp_path, {"aggregator": {"settings": {"rounds_to_train": "many"}}})
    with pytest.raises(PlanError) as info:
        load_plan(path)
    text = str(info.value)
    assert str(path) in text
    assert "aggregator.settings.rounds_to_train" in text
    assert "integer" in text


def test_unknown_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match=r"aggregator.settings.round_to_train"):
        validate_plan({"aggregator": {"settings": {"round_to_train": 3}}}, tmp_path)


def test_unknown_section_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="unknown top-level plan keys"):
        validate_plan({"agregator": {}}, tmp_path)


def test_assigner_names_an_undefined_task(tmp_path: Path) -> None:
    plan = {"assigner": {"settings": {"task_groups": [{"name": "g", "percentage": 1.0, "tasks": ["trian"]}]}}}
    with pytest.raises(PlanError, match="trian"):
        validate_plan(plan, tmp_path)


def test_broken_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text("aggregator:\n  settings: [unclosed\n")
    with pytest.raises(PlanError, match="line"):
        load_plan(path)


def test_missing_plan_file(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="does not exist"):
        load_plan(tmp_path / "nope.yaml")


def test_bad_override_syntax() -> None:
    with pytest.raises(PlanError, match="KEY=VALUE"):
        parse_overrides(["rounds"])


def test_frozen_plan_detects_edits(tmp_path: Path) -> None:
    path = write_plan(tmp_path, {"collaborators": ["a"]})
    frozen = load_plan(path)
    update_plan_file(path, {"hash": frozen.hash})
    assert load_plan(path).hash == frozen.hash
    update_plan_file(path, {"aggregator.settings.rounds_to_train": 3})
    with pytest.raises(PlanError, match="changed after it was frozen"):
        load_plan(path)


def test_membership_is_outside_the_hash_and_can_grow_in_a_frozen_plan(tmp_path: Path) -> None:
    path = write_plan(tmp_path, {"collaborators": ["a"]})
    frozen = load_plan(path)
    update_plan_file(path, {"hash": frozen.hash})
    path.chmod(0o444)
    assert add_collaborator(path, "b") is True
    assert add_collaborator(path, "b") is False
    again = load_plan(path)
    assert again.model.collaborators == ["a", "b"] and again.hash == frozen.hash
    assert path.stat().st_mode & 0o777 == 0o444
    with pytest.raises(PlanError, match="frozen"):
        update_plan_file(path, {"aggregator.settings.rounds_to_train": 2})


def test_hash_cannot_be_overridden_and_bad_yaml_value_is_named() -> None:
    with pytest.raises(PlanError, match="hash cannot be overridden"):
        parse_overrides(["hash=null"])
    with pytest.raises(PlanError, match="not valid YAML"):
        parse_overrides(["a.b=[1,"])


def test_defaults_outside_the_workspace_are_refused(tmp_path: Path) -> None:
    (tmp_path / "outside.yaml").write_text("settings: {}\n")
    workspace = tmp_path / "ws"
    workspace.mkdir()
    with pytest.raises(PlanError, match="outside the workspace"):
        validate_plan({"aggregator": {"defaults": "../outside.yaml"}}, workspace)


def test_reserved_sections_must_stay_empty(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="straggler_handling_policy"):
        validate_plan({"straggler_handling_policy": {"template": "x.y.Cutoff"}}, tmp_path)


def test_apply_must_be_global_or_local(tmp_path: Path) -> None:
    tasks = {
        "settings": {
            "aggregated_model_validation": {"function": "validate", "kwargs": {"apply": "Global"}},
            "train": {"function": "train"},
            "locally_tuned_model_validation": {"function": "validate", "kwargs": {"apply": "local"}},
        }
    }
    with pytest.raises(PlanError, match="apply must be"):
        validate_plan({"tasks": tasks}, tmp_path)


def test_each_workspace_gets_its_own_src_package(tmp_path: Path) -> None:
    import sys

    from accord.imports import import_dotted
    from accord.plan.objects import use_workspace

    for name, value in (("one", 1), ("two", 2)):
        (tmp_path / name / "src").mkdir(parents=True)
        (tmp_path / name / "src" / "__init__.py").write_text("")
        (tmp_path / name / "src" / "model.py").write_text(f"VALUE = {value}\n")
    try:
        use_workspace(tmp_path / "one")
        assert import_dotted("src.model.VALUE", "test") == 1
        use_workspace(tmp_path / "two")
        assert import_dotted("src.model.VALUE", "test") == 2
    finally:
        for name in [n for n in sys.modules if n == "src" or n.startswith("src.")]:
            del sys.modules[name]


def test_build_names_unknown_settings_but_lets_constructor_errors_through(tmp_path: Path) -> None:
    from accord.plan.objects import build

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "__init__.py").write_text("")
    (tmp_path / "src" / "thing.py").write_text(
        "class Thing:\n    def __init__(self, size: int = 1):\n        if size < 0:\n            raise TypeError('inner bug')\n"
    )
    with pytest.raises(PlanError, match="does not accept these settings"):
        build("data_loader", "src.thing.Thing", {"colour": "red"}, tmp_path)
    with pytest.raises(TypeError, match="inner bug"):
        build("data_loader", "src.thing.Thing", {"size": -1}, tmp_path)


def test_updating_a_plan_file_keeps_its_comments_and_order(tmp_path) -> None:
    from accord.plan.loader import read_yaml, update_plan_file

    path = tmp_path / "plan.yaml"
    path.write_text("# who takes part\ncollaborators: []  # filled by fx collaborator certify\naggregator:\n  settings:\n    rounds_to_train: 10  # rounds\n")
    update_plan_file(path, {"collaborators": ["a"], "aggregator.settings.rounds_to_train": 3, "network.settings.agg_port": 1})
    text = path.read_text()
    assert "# who takes part" in text and "# filled by fx collaborator certify" in text and "# rounds" in text
    assert read_yaml(path) == {"collaborators": ["a"], "aggregator": {"settings": {"rounds_to_train": 3}}, "network": {"settings": {"agg_port": 1}}}


def test_a_collaborator_may_not_be_named_aggregator(tmp_path: Path) -> None:
    # "aggregator" is the origin of the aggregated metrics records (metrics.jsonl, sinks)
    with pytest.raises(PlanError, match="is reserved"):
        load_plan(write_plan(tmp_path, {"collaborators": ["a", "Aggregator"]}))
