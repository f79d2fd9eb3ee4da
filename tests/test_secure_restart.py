"""A restart during a secure round's unmask (issue 12): a restarted aggregator resumes the round
at its phase checkpoint (the same seed and unmask request: the sites that revealed answer the
same again, the others reveal, and the round completes to FedAvg over the survivors); a site
never reveals in a second session of a round, even after its own process restarts (its memory
is in its state folder). In process: the engine and the runtime built again on the saved state."""

from __future__ import annotations

import json
import stat
import struct
from dataclasses import replace

import numpy as np
import pytest
from test_engine import FakeClock, make_engine
from test_secure_rounds_checked import NAMES, SETTINGS, _reveal, _to_unmask

from accord.aggregator import phase_checkpoint
from accord.aggregator.phase_checkpoint import PhaseCheckpoint
from accord.aggregator.round_tally import RoundTally
from accord.collaborator.secure_site import SecureSite
from accord.errors import RefusedError
from accord.messages import TaskResult
from accord.strategies.fedavgm import FedAvgM
from accord.strategies.secure import SecureAggregation
from accord.strategies.secure_phases import MASKED, MASKED_DTYPE, decode_opening
from accord.strategies.secure_phases import decode_entries as decode

VALUES = {"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.4}


def _engine(**options):
    return make_engine(NAMES, rounds=1, strategy=SecureAggregation(FedAvgM(momentum=0.0), SETTINGS), clock=FakeClock(), **options)


def test_a_fresh_engine_from_the_checkpoint_mid_unmask_completes_the_round(tmp_path) -> None:
    pytest.importorskip("cryptography")
    engine = _engine()
    sites = {name: SecureSite(name, SETTINGS) for name in NAMES}
    _to_unmask(engine, sites, values=VALUES)
    checkpoint = engine.phase_checkpoint()
    assert checkpoint is not None and checkpoint.phase == "unmask"
    request = engine.assignment("a").payload
    first = {name: decode(sites[name].answer("unmask", 0, request, engine.model), sorted(VALUES), "reveals") for name in "ab"}
    for name in "ab":  # two of four revealed, then the aggregator dies
        _reveal(engine, sites, name)
    phase_checkpoint.save(tmp_path, checkpoint)
    restarted = _engine(resume=phase_checkpoint.load(tmp_path))  # a fresh strategy too: it would draw a new seed
    assert restarted.current.phase == "unmask" and restarted.current.members == NAMES
    assert restarted.assignment("a").payload == request  # the same seed and request: a retry for the sites
    again = decode(sites["a"].answer("unmask", 0, request, restarted.model), sorted(VALUES), "reveals")
    assert again == first["a"]  # a site that revealed answers the same, nothing more
    assert sites["a"].tensors("unmask", 0) is None  # an unsigned site sends no correction (test_secagg_corrections.py)
    uninterrupted = _reveal(engine, sites, "c") or _reveal(engine, sites, "d")  # the same round, no restart
    outcome = None
    for name in NAMES:
        outcome = _reveal(restarted, sites, name) or outcome
    assert outcome is not None and not outcome.bounds
    np.testing.assert_allclose(outcome.model["w"], np.mean(list(VALUES.values())), atol=1e-6)
    # the mask phase's validation metrics and records, as without the restart
    assert uninterrupted is not None and len(uninterrupted.records) == 8
    assert outcome.metrics == uninterrupted.metrics and "aggregated_model_validation/accuracy" in outcome.metrics
    assert list(outcome.records) == list(uninterrupted.records)
    assert (outcome.stragglers, outcome.failed, outcome.best_score) == (uninterrupted.stragglers, uninterrupted.failed, uninterrupted.best_score)


def test_a_checkpoint_of_another_round_or_model_is_not_resumed() -> None:
    pytest.importorskip("cryptography")
    engine = _engine()
    sites = {name: SecureSite(name, SETTINGS) for name in NAMES}
    _to_unmask(engine, sites)
    checkpoint = engine.phase_checkpoint()
    assert checkpoint is not None
    for stale in (
        PhaseCheckpoint(1, checkpoint.model_digest, checkpoint.index, checkpoint.phase, checkpoint.members, checkpoint.state),
        PhaseCheckpoint(0, "another", checkpoint.index, checkpoint.phase, checkpoint.members, checkpoint.state),
        PhaseCheckpoint(0, checkpoint.model_digest, checkpoint.index, checkpoint.phase, checkpoint.members, b"junk"),
        replace(checkpoint, tally=replace(checkpoint.tally, failed={"stranger": "task train failed (ValueError)"})),
    ):
        assert _engine(resume=stale).current.phase == "advertise"


def test_a_checkpoint_whose_tally_is_malformed_is_not_loaded(tmp_path) -> None:
    """The tally is parsed strictly: a value that is not a finite number, a name that is not a
    string, values and counts of different lengths; a checkpoint without one loads with none."""
    pytest.importorskip("cryptography")
    engine = _engine()
    _to_unmask(engine, {name: SecureSite(name, SETTINGS) for name in NAMES})
    checkpoint = engine.phase_checkpoint()
    assert checkpoint is not None and len(checkpoint.tally.records) == 8
    phase_checkpoint.save(tmp_path, checkpoint)
    assert phase_checkpoint.load(tmp_path) == checkpoint
    (task, metric, values, counts), *_ = checkpoint.tally.metrics
    for tally in (
        {**checkpoint.tally.to_json(), "records": [["a", "train", "loss", float("nan")]]},
        {**checkpoint.tally.to_json(), "records": [[1, "train", "loss", 0.5]]},
        {**checkpoint.tally.to_json(), "metrics": [[task, metric, list(values), list(counts)[1:]]]},
        {**checkpoint.tally.to_json(), "failed": ["a"]},
    ):
        _save_with_tally(tmp_path, checkpoint, tally)
        assert phase_checkpoint.load(tmp_path) is None
    _save_with_tally(tmp_path, checkpoint, None)
    assert phase_checkpoint.load(tmp_path) == replace(checkpoint, tally=RoundTally())


def _save_with_tally(directory, checkpoint, tally) -> None:
    """``checkpoint`` saved with ``tally`` (a JSON value; None: no tally) in its header."""
    data = checkpoint.to_bytes()
    (size,) = struct.unpack(">I", data[:4])
    header = json.loads(data[4 : 4 + size])
    if tally is None:
        del header["tally"]
    else:
        header["tally"] = tally
    encoded = json.dumps(header).encode()
    (directory / phase_checkpoint.NAME).write_bytes(struct.pack(">I", len(encoded)) + encoded + checkpoint.state)


def test_a_site_refuses_a_second_session_of_a_round_it_revealed_in_even_after_it_restarts(tmp_path) -> None:
    """The aggregator restarts the round's phases with a fresh seed (no checkpoint) after b
    revealed; b's process restarted too: it still refuses to reveal in the new session, and it
    refuses to advertise again under the old seed. Its memory is 0600 in its state folder."""
    pytest.importorskip("cryptography")
    state = tmp_path / "site-b" / "secagg.json"
    engine = _engine()
    sites = {name: SecureSite(name, SETTINGS, state=state if name == "b" else None) for name in NAMES}
    _to_unmask(engine, sites)
    _reveal(engine, sites, "b")
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    fresh = _engine()  # the old session is lost: phases again from advertise, a fresh seed
    restarted_b = SecureSite("b", SETTINGS, state=state)
    sites["b"] = restarted_b
    old_opening = engine.current.phases._opening
    with pytest.raises(RefusedError, match="a round seed this site already advertised under"):
        restarted_b.answer("advertise", 0, old_opening, fresh.model)
    assert decode_opening(fresh.assignment("b").payload)[0] != decode_opening(old_opening)[0]
    _to_unmask(fresh, sites)
    with pytest.raises(RefusedError, match="reveal shares for round 0 again, in a new session"):
        restarted_b.answer("unmask", 0, fresh.assignment("b").payload, fresh.model)


def _runtime_to_unmask(runtime, plan, sites):
    """Advertise, share and mask through the runtime (each site trains to 0.1 + its index / 10)."""
    names = list(plan.model.collaborators)
    for phase in ("advertise", "share"):
        for name in names:
            given, model = runtime.get_tasks(name, plan.hash, 1.0), runtime.engine.model
            payload = sites[name].answer(phase, 0, given.payload, model)
            runtime.submit(TaskResult(name, 0, phase, 0, {}, model_digest=runtime.engine.model_digest, phase=phase, payload=payload), plan.hash)
    for at, name in enumerate(names):
        given, model = runtime.get_tasks(name, plan.hash, 1.0), runtime.engine.model
        for task in given.tasks:
            if task.name != "train":
                runtime.submit(TaskResult(name, 0, task.name, 10, {"accuracy": 0.5}, model_digest=runtime.engine.model_digest, phase="mask"), plan.hash)
                continue
            trained = {k: np.full_like(v, 0.1 * (at + 1)) for k, v in model.items()}
            reply = sites[name].masked(TaskResult(name, 0, "train", 10, {}, trained), given.payload, model)
            runtime.submit(TaskResult(name, 0, "train", 10, {}, {MASKED: reply.tensors[MASKED].view(MASKED_DTYPE)},
                                      model_digest=runtime.engine.model_digest, phase="mask"), plan.hash)
    assert runtime.engine.current.phase == "unmask"


def test_a_restarted_runtime_resumes_the_unmask_from_its_saved_checkpoint(workspace_factory) -> None:
    pytest.importorskip("cryptography")
    from accord.aggregator.runtime import AggregatorRuntime
    from accord.workspace.initialize import initialize_model

    names = ["alpha", "beta", "gamma"]
    plan = workspace_factory(names, 1, {"aggregator.settings.secure_aggregation.enabled": True, "collaborator.settings.opt_treatment": "RESET"})
    initialize_model(plan)
    settings = plan.model.aggregator.settings.secure_aggregation
    sites = {name: SecureSite(name, settings) for name in names}
    runtime = AggregatorRuntime(plan)
    try:
        _runtime_to_unmask(runtime, plan, sites)
        request = runtime.get_tasks("alpha", plan.hash, 1.0).payload
        reveals = sites["alpha"].answer("unmask", 0, request, runtime.engine.model)
        runtime.submit(_unmask_reply(runtime, sites, "alpha", reveals), plan.hash)
        directory = runtime.journal.directory
    finally:
        runtime.close()
    saved = directory / phase_checkpoint.NAME
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    restarted = AggregatorRuntime(plan)
    try:
        for name in names:
            given = restarted.get_tasks(name, plan.hash, 1.0)
            assert (given.round_number, given.phase, given.payload) == (0, "unmask", request)
            payload = sites[name].answer("unmask", 0, given.payload, restarted.engine.model)
            restarted.submit(_unmask_reply(restarted, sites, name, payload), plan.hash)
        assert restarted.engine.round_number == 1  # round 0 closed (1: the final validation)
        model = restarted.engine.model
        mean = np.mean([0.1, 0.2, 0.3])
        for tensor in model.values():
            if np.asarray(tensor).dtype.kind == "f":
                np.testing.assert_allclose(np.asarray(tensor), mean, atol=1e-5)
    finally:
        restarted.close()


#: four sites (threshold 3): each masks an update of its own on a sample count of its own and
#: reports metrics of its own; delta validates the global model, then its training fails
SITES = ["alpha", "beta", "gamma", "delta"]


def _result(runtime, name, task, samples, metrics, **fields):
    return TaskResult(name, 0, task, samples, metrics, model_digest=runtime.engine.model_digest, phase="mask", task_seconds=0.5 * samples, **fields)


def _mask_phase(runtime, plan, sites) -> None:
    """Advertise, share and mask through the runtime (see SITES), alpha's reveal taken."""
    for phase in ("advertise", "share"):
        for name in SITES:
            given, model = runtime.get_tasks(name, plan.hash, 1.0), runtime.engine.model
            payload = sites[name].answer(phase, 0, given.payload, model)
            runtime.submit(TaskResult(name, 0, phase, 0, {}, model_digest=runtime.engine.model_digest, phase=phase, payload=payload), plan.hash)
    for at, name in enumerate(SITES, 1):
        given, model = runtime.get_tasks(name, plan.hash, 1.0), runtime.engine.model
        samples = 100 + 2 * at  # under the cap on counts (1.1x their lower median)
        for task in given.tasks:
            if name == "delta" and task.name == "train":
                runtime.submit(_result(runtime, name, task.name, 0, {}, failure="task train failed (ValueError)"), plan.hash)
                break  # it owes nothing more
            if task.name == "train":
                trained = {k: np.full_like(v, 0.1 * at) for k, v in model.items()}
                reply = sites[name].masked(TaskResult(name, 0, "train", samples, {"loss": 2.0 / at}, trained), given.payload, model)
                masked = {MASKED: reply.tensors[MASKED].view(MASKED_DTYPE)}
                runtime.submit(_result(runtime, name, "train", samples, reply.metrics, tensors=masked), plan.hash)
            else:
                metrics = {"accuracy": 0.5 + 0.1 * at + (0.05 if "local" in task.name else 0.0), "loss": 1.0 / at}
                runtime.submit(_result(runtime, name, task.name, samples, metrics), plan.hash)
    assert runtime.engine.current.phase == "unmask"
    _unmask(runtime, plan, sites, ["alpha"])


def _unmask(runtime, plan, sites, names) -> None:
    for name in names:
        given = runtime.get_tasks(name, plan.hash, 1.0)
        assert (given.round_number, given.phase) == (0, "unmask")
        payload = sites[name].answer("unmask", 0, given.payload, runtime.engine.model)
        runtime.submit(_unmask_reply(runtime, sites, name, payload), plan.hash)


def _unmask_reply(runtime, sites, name, reveals) -> TaskResult:
    """``name``'s unmask reply through the runtime: its reveals and, in a signed round, its correction (staged as any tensor)."""
    tensors = sites[name].tensors("unmask", 0)
    return TaskResult(name, 0, "unmask", 0, {}, tensors, model_digest=runtime.engine.model_digest, phase="unmask", payload=reveals)


def _secure_round(plan, restart: bool) -> dict:
    """Round 0 of ``plan`` run to its close through the runtime, its aggregator restarted once
    alpha revealed if ``restart``: the round's metrics.jsonl records (its timing left out), the
    next round's saved status and whether a best model was published."""
    from accord.aggregator import saved as disk
    from accord.aggregator.runtime import AggregatorRuntime
    from accord.metric_records import read_metrics
    from accord.workspace.initialize import initialize_model

    initialize_model(plan)
    settings = plan.model.aggregator.settings
    sites = {name: SecureSite(name, settings.secure_aggregation) for name in SITES}
    runtime = AggregatorRuntime(plan)
    try:
        _mask_phase(runtime, plan, sites)
        if restart:  # alpha's reveal is lost with it: the restarted aggregator asks it again
            runtime.close()
            runtime = AggregatorRuntime(plan)
        _unmask(runtime, plan, sites, ["alpha", "beta", "gamma"] if restart else ["beta", "gamma"])
        assert runtime.engine.round_number == 1
        model = runtime.engine.model
    finally:
        runtime.close()
    state = plan.resolve_path(settings.state_dir)
    records = [r for r in read_metrics(plan.resolve_path(settings.metrics_path)) if r.task != "round"]
    return {
        "records": records,
        "status": {k: v for k, v in disk.read_snapshot(state / disk.snapshot_name(1))["status"].items() if k != "opened_at"},
        "best": plan.resolve_path(settings.best_state_path).is_file(),
        "model": {k: np.asarray(v).tolist() for k, v in model.items()},
    }


def test_a_round_resumed_at_unmask_keeps_the_mask_phases_metrics_and_records(workspace_factory) -> None:
    """The mask phase's validation and train metrics, sample counts and per-site records, who
    failed, the best model judged on them: after a restart mid-unmask, as without one."""
    pytest.importorskip("cryptography")
    overrides = {"aggregator.settings.secure_aggregation.enabled": True, "collaborator.settings.opt_treatment": "RESET"}
    plain, resumed = (_secure_round(workspace_factory(SITES, 1, overrides), restart) for restart in (False, True))
    aggregated = {f"{r.task}/{r.metric}": r.value for r in plain["records"] if r.origin == "aggregator"}
    weights = {at: 100 + 2 * at for at in range(1, 5)}
    accuracy = sum((0.5 + 0.1 * at) * weights[at] for at in weights) / sum(weights.values())
    assert aggregated["aggregated_model_validation/accuracy"] == pytest.approx(accuracy)
    assert aggregated["train/loss"] == pytest.approx(sum(2.0 / at * weights[at] for at in (1, 2, 3)) / (102 + 104 + 106))
    assert {(r.origin, r.task) for r in plain["records"]} >= {("delta", "aggregated_model_validation"), ("gamma", "train")}
    assert plain["best"]
    assert resumed["records"] == plain["records"]
    assert resumed["status"] == plain["status"]
    assert resumed["best"] and resumed["model"] == plain["model"]
