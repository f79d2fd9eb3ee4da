"""A site's spent local privacy budget, end to end in one process (the real runtime, torch
runners, in-process transport): LocalDP counts its releases in the site's own state folder
(save/site-NAME/local_dp.json), a restarted site goes on from them, and past the planned budget
the site refuses to train, logs why and tells the aggregator, which logs the report (review 12,
finding 8)."""

from __future__ import annotations

import json
import logging
import threading

import pytest

pytest.importorskip("dp_accounting")

from accord.aggregator.runtime import AggregatorRuntime
from accord.collaborator.executor import SiteFailure
from accord.collaborator.site import build_collaborator
from accord.dp.ledger import BudgetSpent
from accord.messages import Task, TaskResult
from accord.mods.base import Instruction
from accord.transport.inprocess import InProcessClient
from accord.workspace.initialize import initialize_model

LOCAL_DP = [{"template": "accord.mods.LocalDP", "settings": {"max_norm": 1.0, "epsilon": 8.0, "rounds": 1}}]


def run_site(plan, runtime, name: str) -> BaseException | None:
    """Run ``name`` until it ends; its error, if any."""
    errors: list[BaseException] = []

    def work() -> None:
        try:
            build_collaborator(plan, name, InProcessClient(runtime, name, plan.hash, 5.0)).run()
        except BaseException as exc:  # returned to the test
            errors.append(exc)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(120)
    assert not thread.is_alive()
    return errors[0] if errors else None


def test_a_site_refuses_to_train_past_its_budget_and_the_aggregator_is_told(workspace_factory, caplog) -> None:
    plan = workspace_factory(["alpha"], rounds=3, overrides={"collaborator.settings.mods": LOCAL_DP})
    initialize_model(plan)
    runtime = AggregatorRuntime(plan)
    with caplog.at_level(logging.WARNING):
        refused = run_site(plan, runtime, "alpha")
    assert isinstance(refused, SiteFailure)
    assert "LocalDP's privacy budget is spent: 1 noised updates sent of the 1" in refused.message  # the site's reason
    ledger = plan.workspace / "save" / "site-alpha" / "local_dp.json"
    assert json.loads(ledger.read_text())["releases"] == [[0, "train"]]  # round 0's release, kept
    told = [r.getMessage() for r in caplog.records if r.name.startswith("accord.aggregator")]
    assert any("alpha failed" in line and "LocalDP's privacy budget is spent" in line for line in told), told

    restarted = plan.mods()[0]  # the site restarted: its mod reads the ledger build_collaborator gave it
    restarted.keep_state_in(ledger.parent)
    train = Task("train", "train", {})
    with pytest.raises(BudgetSpent, match="1 noised updates sent of the 1"):
        restarted(Instruction("alpha", 1, train, {}, "d" * 64), lambda _: TaskResult("alpha", 1, "train", 1, {}))
