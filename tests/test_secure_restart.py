"""A restart during a secure round's unmask (issue 12): a restarted aggregator resumes the round
at its phase checkpoint (the same seed and unmask request: the sites that revealed answer the
same again, the others reveal, and the round completes to FedAvg over the survivors); a site
never reveals in a second session of a round, even after its own process restarts (its memory
is in its state folder). In process: the engine and the runtime built again on the saved state."""

from __future__ import annotations

import stat

import numpy as np
import pytest
from test_engine import FakeClock, make_engine
from test_secure_rounds_checked import NAMES, SETTINGS, _reveal, _to_unmask

from accord.aggregator import phase_checkpoint
from accord.aggregator.phase_checkpoint import PhaseCheckpoint
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
    first = {name: decode(sites[name].answer("unmask", 0, request, engine.model), "reveals") for name in "ab"}
    for name in "ab":  # two of four revealed, then the aggregator dies
        _reveal(engine, sites, name)
    phase_checkpoint.save(tmp_path, checkpoint)
    restarted = _engine(resume=phase_checkpoint.load(tmp_path))  # a fresh strategy too: it would draw a new seed
    assert restarted.current.phase == "unmask" and restarted.current.members == NAMES
    assert restarted.assignment("a").payload == request  # the same seed and request: a retry for the sites
    again = decode(sites["a"].answer("unmask", 0, request, restarted.model), "reveals")
    assert again == first["a"]  # a site that revealed answers the same, nothing more
    outcome = None
    for name in NAMES:
        outcome = _reveal(restarted, sites, name) or outcome
    assert outcome is not None and not outcome.bounds
    np.testing.assert_allclose(outcome.model["w"], np.mean(list(VALUES.values())), atol=1e-6)


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
    ):
        assert _engine(resume=stale).current.phase == "advertise"


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
        runtime.submit(TaskResult("alpha", 0, "unmask", 0, {}, model_digest=runtime.engine.model_digest, phase="unmask", payload=reveals), plan.hash)
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
            restarted.submit(TaskResult(name, 0, "unmask", 0, {}, model_digest=restarted.engine.model_digest, phase="unmask", payload=payload), plan.hash)
        assert restarted.engine.round_number == 1  # round 0 closed (1: the final validation)
        model = restarted.engine.model
        mean = np.mean([0.1, 0.2, 0.3])
        for tensor in model.values():
            if np.asarray(tensor).dtype.kind == "f":
                np.testing.assert_allclose(np.asarray(tensor), mean, atol=1e-5)
    finally:
        restarted.close()
