"""A whole federation in one process: the real runtime, torch runners, in-process transport."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from accord.aggregator.runtime import AggregatorRuntime
from accord.collaborator.site import build_collaborator
from accord.errors import RefusedError
from accord.metric_records import read_metrics
from accord.tensors.state import load_state
from accord.transport.inprocess import InProcessClient
from accord.workspace.initialize import initialize_model


def run_federation(plan, names):
    initialize_model(plan)
    runtime = AggregatorRuntime(plan)
    results: dict[str, int] = {}
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            results[name] = build_collaborator(plan, name, InProcessClient(runtime, name, plan.hash, 5.0)).run()
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,), daemon=True) for n in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    assert runtime.finished
    return runtime, results


@pytest.mark.parametrize(
    "treatment, delta",
    [("RESET", False), ("CONTINUE_LOCAL", True), ("CONTINUE_GLOBAL", False), ("CONTINUE_GLOBAL", True)],
)
def test_federation_trains_and_writes_files(workspace_factory, treatment, delta) -> None:
    names = ["alpha", "beta"]
    plan = workspace_factory(
        names,
        rounds=3,
        overrides={"collaborator.settings.opt_treatment": treatment, "collaborator.settings.delta_updates": delta},
    )
    _runtime, worked = run_federation(plan, names)
    assert worked == {"alpha": 4, "beta": 4}  # 3 training rounds + the final validation
    settings = plan.model.aggregator.settings
    last = load_state(plan.resolve_path(settings.last_state_path))
    init = load_state(plan.resolve_path(settings.init_state_path))
    assert set(last) == set(init)
    assert any(not np.array_equal(last[k], init[k]) for k in init)
    assert any(k.startswith("__opt__.") for k in last) == (treatment == "CONTINUE_GLOBAL")
    assert plan.resolve_path(settings.best_state_path).is_file()
    records = read_metrics(plan.resolve_path(settings.metrics_path))
    accuracy = [r.value for r in records if r.origin == "aggregator" and r.task == "aggregated_model_validation" and r.metric == "accuracy"]
    assert len(accuracy) == 4 and accuracy[-1] > accuracy[0]
    per_site = {(r.round, r.origin) for r in records if r.origin in names}
    assert per_site == {(r, n) for r in range(4) for n in names}


def test_runtime_refuses_wrong_plan_or_workspace_hash_and_unknown_name(workspace_factory) -> None:
    plan = workspace_factory(["alpha"], rounds=1)
    initialize_model(plan)
    runtime = AggregatorRuntime(plan)
    with pytest.raises(RefusedError, match="plans differ") as info:
        runtime.join("alpha", "0" * 96)
    assert info.value.kind == "plan"
    with pytest.raises(RefusedError, match="not in the plan") as info:
        runtime.join("mallory", plan.hash)
    assert info.value.kind == "identity"
    ours = runtime.workspace_hash
    assert runtime.join("alpha", plan.hash, ours).workspace_hash == ours  # the site checks this answer
    for theirs, shown in (("", "(none)"), ("1" * 96, "1" * 16 + "..."), ("x\nforged", "(not a SHA-384 hash)")):
        with pytest.raises(RefusedError, match="workspace hash") as info:
            runtime.join("alpha", plan.hash, theirs)
        assert info.value.kind == "plan" and shown in info.value.message and ours[:16] in info.value.message
    runtime.close()


def test_an_exception_in_a_sites_task_code_is_reported_and_the_round_goes_on(workspace_factory, caplog) -> None:
    """beta's training raises in round 1: the aggregator is told (the round closes with alpha
    at once, under wait_for_all), beta stops with a SiteFailure naming the error and its loader.
    The aggregator learns only the task and the error's type: the error's text (here quoting a
    patient's name from the site's data) and the site's data path never leave the site."""
    from accord.collaborator.collaborator import SiteFailure

    names = ["alpha", "beta"]
    plan = workspace_factory(names, rounds=2, overrides={"aggregator.settings.final_validation": False})
    initialize_model(plan)
    runtime = AggregatorRuntime(plan)
    alpha = build_collaborator(plan, "alpha", InProcessClient(runtime, "alpha", plan.hash, 5.0))
    beta = build_collaborator(plan, "beta", InProcessClient(runtime, "beta", plan.hash, 5.0))
    train, calls = beta.runner.train, []

    def broken(data, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("could not convert string to float: 'Jane Doe'")
        return train(data, **kwargs)

    beta.runner.train = broken
    failures: list[BaseException] = []

    def run_beta() -> None:
        try:
            beta.run()
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=run_beta, daemon=True)
    thread.start()
    with caplog.at_level("WARNING", logger="accord.aggregator"):
        assert alpha.run() == 2
    thread.join(60)
    runtime.close()
    assert runtime.finished
    (failure,) = failures
    assert isinstance(failure, SiteFailure)
    assert "task train failed with ValueError: could not convert string to float: 'Jane Doe' (data loader DigitsDataLoader" in str(failure)
    aggregator_log = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("accord.aggregator"))
    assert "round 1  beta failed train at its site: task train failed (ValueError) (it owes nothing" in aggregator_log
    assert "Jane Doe" not in aggregator_log and "could not convert" not in aggregator_log
    trained = {(r.round, r.origin) for r in read_metrics(plan.resolve_path("logs/metrics.jsonl")) if r.task == "train"}
    assert ("beta", 1) not in {(o, n) for n, o in trained} and (1, "alpha") in trained and (0, "beta") in trained
