"""Building the plan's strategy: abstract bases refused, settings typed strictly, annotations
that cannot be resolved said in one line; no workspace code imported by loading a plan."""

from __future__ import annotations

from pathlib import Path

import pytest

from accord.errors import PlanError
from accord.plan.strategy import build_strategy, names_workspace_code


@pytest.mark.parametrize(
    "template", ["accord.strategies.robust.RobustStrategy", "accord.strategies.fedopt.ServerOptimizer", "accord.strategies.fedopt.AdaptiveOptimizer"]
)
def test_an_abstract_base_is_refused_when_the_plan_loads(template: str, tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="is an abstract base class"):
        build_strategy({"template": template}, tmp_path)


@pytest.mark.parametrize(
    ("template", "settings", "shown"),
    [
        ("accord.strategies.Krum", {"byzantine": True}, "byzantine: Input should be a valid integer"),
        ("accord.strategies.Krum", {"byzantine": "2"}, "byzantine: Input should be a valid integer"),
        ("accord.strategies.FedAdam", {"eta": float("inf")}, "eta: Input should be a finite number"),
        ("accord.strategies.FedAvgM", {"server_lr": "1e0"}, "server_lr: Input should be a valid number"),
    ],
)
def test_settings_are_typed_strictly(template: str, settings: dict, shown: str, tmp_path: Path) -> None:
    with pytest.raises(PlanError, match=shown):
        build_strategy({"template": template, "settings": settings}, tmp_path)


def test_an_int_passes_for_a_float_and_a_wrapped_strategy_is_built(tmp_path: Path) -> None:
    built = build_strategy(
        {"template": "accord.strategies.NormClipping", "settings": {"max_norm": 2, "strategy": {"template": "accord.strategies.FedAdam", "settings": {"eta": 1}}}},  # noqa: E501
        tmp_path,
    )
    assert built.max_norm == 2.0 and type(built.strategy).__name__ == "FedAdam" and built.strategy.eta == 1.0


def test_an_annotation_only_a_type_checker_can_resolve_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "__init__.py").write_text("")
    (tmp_path / "src" / "mine.py").write_text(
        "from __future__ import annotations\nfrom typing import TYPE_CHECKING\nfrom accord.strategies import FedAvg\n"
        "if TYPE_CHECKING:\n    from decimal import Decimal\n"
        "class Mine(FedAvg):\n    def __init__(self, x: Decimal | None = None) -> None:\n        self.x = x\n"
    )
    with pytest.raises(PlanError, match=r"src.mine.Mine's constructor annotations cannot be resolved \(NameError"):
        build_strategy({"template": "src.mine.Mine", "settings": {"x": None}}, tmp_path)


def test_workspace_code_is_found_inside_wrappers() -> None:
    assert names_workspace_code({"template": "src.a.B"})
    assert names_workspace_code({"template": "accord.strategies.NormClipping", "settings": {"strategy": {"template": "src.a.B"}}})
    assert not names_workspace_code({"template": "accord.strategies.NormClipping", "settings": {"strategy": {"template": "accord.strategies.FedAvg"}}})
