"""docs/strategies.md's worked example, as written: its ``src/strategies.py`` in a fresh
workspace, its plan block, its native-API block (a federation of two sites in one process),
and what the strategy does (the custom finish runs; the counts do not weigh)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml

import accord.native as fx
from accord.errors import PlanError
from accord.plan.loader import validate_plan
from accord.runners.numpy_runner import SklearnLinearRunner
from accord.strategies import Strategy
from accord.strategies.seam import Reply, RoundContext
from accord.tensors.state import load_state

DOC = Path(__file__).resolve().parents[1] / "docs" / "strategies.md"


def block(marker: str) -> str:
    """The code block right after ``<!-- worked example: marker -->`` in the guide."""
    found = re.search(rf"<!-- worked example: {re.escape(marker)} -->\n```[a-z]+\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert found, f"docs/strategies.md has no code block after <!-- worked example: {marker} -->"
    return found.group(1)


def workspace(root: Path) -> Path:
    """A fresh folder whose src/strategies.py is exactly the documented file."""
    (root / "src").mkdir(parents=True)
    (root / "src" / "strategies.py").write_text(block("src/strategies.py"), encoding="utf-8")
    return root


def sites(counts=(40, 160)) -> dict[str, fx.FederatedModel]:
    """Two sites of unequal sizes (scikit-learn linear models: NumPy only, fast)."""
    rng = np.random.default_rng(0)
    n = sum(counts)
    x = rng.normal(size=(n + 60, 3))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    data = fx.FederatedDataSet(x[:n], y[:n], x[n:], y[n:], batch_size=16, num_classes=2)
    model = fx.FederatedModel(runner=lambda: SklearnLinearRunner(classes=2, n_features=3), data_loader=data)
    return fx.setup(num_collaborators=2, model=model)


def test_the_plan_block_builds_the_workspace_strategy(tmp_path: Path) -> None:
    ws = workspace(tmp_path / "ws")
    raw = {**yaml.safe_load(block("plan")), "collaborators": ["a", "b"]}
    strategy = validate_plan(raw, ws).strategy()
    assert isinstance(strategy, Strategy) and type(strategy).__name__ == "EqualVotes"
    assert (strategy.server_lr, strategy.min_sites) == (0.5, 2)
    raw["aggregator"]["settings"]["strategy"]["settings"]["server_lr"] = "fast"
    with pytest.raises(PlanError, match=r"EqualVotes settings are wrong: server_lr"):
        validate_plan(raw, ws).strategy()  # a workspace strategy is built where it runs, not at load


def test_the_native_block_runs_a_federation_with_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = workspace(tmp_path / "my_workspace")
    monkeypatch.chdir(tmp_path)
    namespace = {"fx": fx, "collaborators": sites()}
    exec(compile(block("native"), str(DOC), "exec"), namespace)
    run = fx.last_run
    assert run is not None and run.plan is not None and run.plan.workspace.resolve() == ws.resolve()
    assert run.plan.model.aggregator.settings.strategy.template == "src.strategies.EqualVotes"
    assert len(run.aggregated("aggregated_model_validation/accuracy")) == 4  # 3 rounds and the final validation
    assert namespace["final_model"] is not None


def test_its_finish_is_what_runs_the_federation(tmp_path: Path) -> None:
    """server_lr 0: the custom finish keeps the global model, so the federation ends where it began."""
    ws = workspace(tmp_path / "ws")
    override = {
        "aggregator.settings.rounds_to_train": 2,
        "aggregator.settings.strategy": {"template": "src.strategies.EqualVotes", "settings": {"server_lr": 0.0}},
    }
    fx.run_experiment(sites(), override_config=override, workspace=ws)
    plan = fx.last_run.plan
    first = load_state(plan.resolve_path(plan.model.aggregator.settings.init_state_path))
    last = load_state(plan.resolve_path(plan.model.aggregator.settings.last_state_path))
    assert set(first) == set(last) and all(np.array_equal(first[k], last[k]) for k in first)


def test_the_declared_counts_do_not_weigh(tmp_path: Path) -> None:
    ws = workspace(tmp_path / "ws")
    raw = {**yaml.safe_load(block("plan")), "collaborators": ["a", "b"]}
    strategy = validate_plan(raw, ws).strategy()  # server_lr 0.5
    global_model = {"w": np.zeros(3, np.float32)}
    context = RoundContext(0, global_model, cohort=("a", "b"))
    accumulator = strategy.accumulator(context)
    accumulator.add(Reply("a", {"w": np.full(3, 1.0, np.float32)}, 1.0))
    accumulator.add(Reply("b", {"w": np.full(3, 3.0, np.float32)}, 1000.0))  # claims 1,000 samples
    model = strategy.finish(context, accumulator.result())
    np.testing.assert_allclose(model["w"], 0.5 * 2.0)  # half way to the plain mean, 2.0
    assert strategy.min_replies(2) == 2
