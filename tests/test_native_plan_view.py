"""OpenFL's fx.get_plan() / fx.update_plan() on accord.native: the session's plan as flat dotted
keys, and changes made ahead of run_experiment, validated and refused in one line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import accord.native as fx
from accord.errors import PlanError
from accord.native.plan_view import flatten


@pytest.fixture(autouse=True)
def fresh_session() -> Iterator[None]:
    fx.init("torch_cnn_mnist", log_level=None)
    yield
    fx.init("torch_digits", log_level=None)


def test_get_plan_is_the_plan_flat_with_defaults_merged_and_json_printable() -> None:
    plan = fx.get_plan()
    assert plan["aggregator.settings.rounds_to_train"] == 10  # the template's value
    assert plan["aggregator.settings.best_state_path"] == "save/best.safetensors"  # a packaged default
    assert isinstance(plan["assigner.settings.task_groups"], list)  # lists kept whole, as OpenFL's flatten_preserve_lists
    assert not [k for k, v in plan.items() if v is None or "defaults" in k.split(".")]
    assert json.loads(json.dumps(plan, indent=4, sort_keys=True)) == plan  # OpenFL's tutorials print it so
    assert flatten({"a": {"b": 1, "c": {}}, "d": [1]}) == {"a.b": 1, "a.c": {}, "d": [1]}


def test_update_plan_changes_what_the_next_run_uses(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    fx.update_plan({"aggregator.settings.rounds_to_train": 2, "collaborator.settings.opt_treatment": "RESET"})
    assert fx.get_plan()["aggregator.settings.rounds_to_train"] == 2
    assert fx.get_plan()["collaborator.settings.opt_treatment"] == "RESET"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 2)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int)
    fx.FederatedModel(lambda: torch.nn.Linear(2, 2), data_loader=fx.FederatedDataSet(x[:60], y[:60], x[60:], y[60:]))
    fx.run_experiment(fx.setup(num_collaborators=2), workspace=tmp_path)
    result = fx.last_run
    assert result is not None and len(result.aggregated("aggregated_model_validation/accuracy")) == 3  # 2 rounds + final
    assert result.plan is not None and result.plan.rounds == 2


@pytest.mark.parametrize(
    "change, shown",
    [
        ({"aggregator.settings.rounds_to_trian": 3}, "update_plan: aggregator.settings.rounds_to_trian: Extra inputs are not permitted"),
        ({"aggregator.settings.rounds_to_train": "ten"}, "update_plan: aggregator.settings.rounds_to_train: Input should be a valid integer"),
        ({"nope.settings.x": 1}, "update_plan: unknown top-level plan keys ['nope']"),
        ({"data_loader.settings.batch_size": 8}, "the native API takes the data and the model from Python objects"),
    ],
)
def test_a_bad_change_is_refused_in_one_line_and_nothing_changes(change: dict, shown: str) -> None:
    before = fx.get_plan()
    with pytest.raises(PlanError) as raised:
        fx.update_plan({"aggregator.settings.rounds_to_train": 4, **change})
    assert shown in str(raised.value) and "(fix: " in str(raised.value) and "\n" not in str(raised.value)
    assert fx.get_plan() == before  # not even the good key of the same call
