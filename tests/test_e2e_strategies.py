"""Every strategy end to end: a real `fx aggregator start` and `fx collaborator start`
processes over mutual TLS, the strategy named in the plan; and a plan naming a wrong strategy
or wrong settings fails at load, the CLI printing one line."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import write_digits_shards

from accord.experiment.local import fx_command, prepare_workspace, run_processes
from accord.plan.loader import Plan, load_plan, update_plan_file
from accord.tensors.state import load_state
from accord.workspace.initialize import initialize_model

pytestmark = pytest.mark.e2e

SITES = 5
#: (template, settings) of each strategy run end to end; each fits SITES collaborators
CASES: list[tuple[str, dict[str, Any]]] = [
    ("accord.strategies.FedAvg", {}),
    ("accord.strategies.CoordinateMedian", {}),
    ("accord.strategies.TrimmedMean", {"beta": 0.2}),
    ("accord.strategies.GeometricMedian", {}),
    ("accord.strategies.Krum", {"byzantine": 1}),
    ("accord.strategies.MultiKrum", {"byzantine": 1, "keep": 3}),
    ("accord.strategies.Bulyan", {"byzantine": 0}),  # f = 1 needs 4f + 3 = 7 sites
    ("accord.strategies.NormClipping", {"max_norm": 0.5, "strategy": {"template": "accord.strategies.FedAvg"}}),
]
#: one round of one epoch, no locally tuned validation, and sites that import NumPy alone
#: (tests/numpy_softmax.py: float weights, an int64 counter and optimizer state): the
#: cheapest federation that aggregates
CHEAP = {
    "aggregator.settings.final_validation": False,
    "assigner.settings.task_groups": [{"name": "all", "percentage": 1.0, "tasks": ["aggregated_model_validation", "train"]}],
    "tasks.settings.train.kwargs": {"epochs": 1},
    "task_runner": {"template": "src.softmax.SoftmaxRunner", "settings": {"seed": 0}},
    "data_loader": {"template": "accord.data.npz.NpzDataLoader", "settings": {"batch_size": 32}},
}
RUNNER = Path(__file__).with_name("numpy_softmax.py")


def numpy_workspace(root: Path, strategy: dict[str, Any] | None = None) -> Plan:
    """A federation of SITES NumPy sites on digits shards (the PKI made by prepare_workspace)."""
    ws = prepare_workspace(root / "ws", collaborators=SITES, rounds=1).workspace
    shutil.copy(RUNNER, ws / "src" / "softmax.py")
    shards, _, _ = write_digits_shards(root / "data", SITES)
    (ws / "plan" / "data.yaml").write_text(yaml.safe_dump({f"collaborator{i}": str(p) for i, p in enumerate(shards, 1)}))
    update_plan_file(ws / "plan" / "plan.yaml", {**CHEAP, **({"aggregator.settings.strategy": strategy} if strategy else {})})
    plan = load_plan(ws / "plan" / "plan.yaml", workspace=ws)
    initialize_model(plan)
    return plan


def case_id(case: tuple[str, dict[str, Any]]) -> str:
    return case[0].rsplit(".", 1)[1]


@pytest.mark.parametrize("template, settings", CASES, ids=[case_id(c) for c in CASES])
def test_each_strategy_runs_a_federation_over_mutual_tls(tmp_path: Path, template: str, settings: dict[str, Any]) -> None:
    plan = numpy_workspace(tmp_path, {"template": template, "settings": settings})
    lines: list[str] = []
    report = run_processes(plan, on_line=lines.append, timeout=300)
    out = "\n".join(lines)
    assert report.ok, (report.returncodes, out[-3000:])
    assert f"aggregation strategy {template}" in out and "federation finished" in out
    first = load_state(plan.workspace / "save" / "init.safetensors")
    last = load_state(plan.workspace / "save" / "last.safetensors")
    assert all(np.isfinite(v).all() for v in last.values())
    assert not np.array_equal(first["w"], last["w"]) and not np.array_equal(first["__opt__.w.velocity"], last["__opt__.w.velocity"])
    assert last["steps"].dtype == np.int64 and int(last["steps"][0]) > 0
    left_out = [line for line in out.splitlines() if "not selected" in line]
    if "Krum" in template:  # the sites Krum did not keep are named
        assert len(left_out) == SITES - settings.get("keep", 1), out
    else:
        assert not left_out
    if template.endswith("NormClipping"):
        assert "clipped to norm 0.5: NormClipping max_norm 0.5" in out


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return numpy_workspace(tmp_path_factory.mktemp("plans")).workspace


@pytest.mark.parametrize(
    "strategy, message",
    [
        ({"template": "accord.strategies.Nope"}, "aggregator.settings.strategy.template"),
        ({"template": "accord.strategies.seam.Reply"}, "aggregator.settings.strategy.template accord.strategies.seam.Reply is not a Strategy class"),
        ({"template": "accord.strategies.os"}, "'accord.strategies.os' is not allowed"),
        ({"template": "accord.strategies.Krum", "settings": {"byzantine": "two"}}, "accord.strategies.Krum settings are wrong: byzantine:"),
        (
            {"template": "accord.strategies.Krum", "settings": {"byzantine": -1}},
            "strategy Krum: byzantine is -1; expected at least 0 (the hostile sites tolerated) (fix: set byzantine in aggregator.settings.strategy.settings",
        ),
        ({"template": "accord.strategies.Krum", "settings": {"byzantine": 2}}, "strategy Krum needs at least 7 replies a round, but a round asks 5 of the 5"),
        (
            {"template": "accord.strategies.NormClipping", "settings": {"max_norm": 1.0, "strategy": {"template": "accord.strategies.Bulyan"}}},
            "strategy NormClipping needs at least 7 replies a round",
        ),
    ],
    ids=["unknown", "not-a-strategy", "not-allowed", "wrong-type", "out-of-range", "too-few-for-krum", "too-few-for-wrapped-bulyan"],
)
def test_a_wrong_strategy_fails_at_load_in_one_line(workspace: Path, strategy: dict[str, Any], message: str) -> None:
    plan_file = workspace / "plan" / "plan.yaml"
    update_plan_file(plan_file, {"aggregator.settings.strategy": strategy})
    try:
        started = subprocess.run(fx_command("aggregator", "start", "-w", str(workspace)), capture_output=True, text=True, timeout=120)
    finally:
        update_plan_file(plan_file, {"aggregator.settings.strategy": {"template": "accord.strategies.FedAvg", "settings": {}}})
    assert started.returncode == 2, started.stdout + started.stderr
    errors = [line for line in started.stderr.splitlines() if line.startswith("fx: error:")]
    assert len(errors) == 1 and message in errors[0], started.stderr
    assert "Traceback" not in started.stderr and "listening" not in started.stdout + started.stderr
