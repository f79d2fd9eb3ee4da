"""Secure rounds through the pure engine with honest SecureSites (no network), where the
aggregator's checks bite (review 12): a forged weight holds the round (the global model and
the server optimizer untouched, a ``held`` event names the check, the next round opens); the
unmask phase does not close on a reply count while some secret lacks its share threshold of
reveals; a site revealing a wrong share is excluded and the round steps; a phase whose ``begin`` refuses leaves the engine in the phase it was in."""

from __future__ import annotations

import numpy as np
import pytest
from test_engine import FakeClock, make_engine
from test_engine_phases import EchoPhases, Phased, reply

from accord.aggregator.owed import ExcusedRefusal
from accord.aggregator.stragglers import StragglerPolicy
from accord.collaborator.secure_site import SecureSite
from accord.errors import RefusedError
from accord.messages import TaskResult
from accord.plan.aggregator_settings import SecureAggregationSettings
from accord.secagg.messages import Reveal, decode_reveal, encode_reveal
from accord.strategies.fedavgm import FedAvgM
from accord.strategies.secure import HELD_BY, SecureAggregation
from accord.strategies.secure_phases import MASKED, MASKED_DTYPE
from accord.strategies.secure_phases import decode_entries as decode
from accord.strategies.secure_phases import encode_entries as encode

NAMES = ("a", "b", "c", "d")
SETTINGS = SecureAggregationSettings(enabled=True)


def _submit(engine, name, phase, task, payload=b"", tensors=None, n=0):
    return engine.submit(
        TaskResult(name, engine.round_number, task, n, {"accuracy": 0.5} if "validation" in task else {}, tensors,
                   model_digest=engine.model_digest, phase=phase, payload=payload)
    )


def _to_unmask(engine, sites, forge=None, values=None):
    """Advertise, share and mask (each site trains to a model of ``values[name]``, 0.1 by
    default, everywhere, 10 samples); ``forge(name, vector)`` may rewrite a site's masked vector."""
    for phase in ("advertise", "share"):
        for name in NAMES:
            model = engine.model
            given = engine.assignment(name)
            _submit(engine, name, phase, phase, sites[name].answer(phase, engine.round_number, given.payload, model))
    assert engine.current.phase == "mask"
    for name in NAMES:
        given, model = engine.assignment(name), engine.model
        trained = {k: np.full_like(v, (values or {}).get(name, 0.1)) for k, v in model.items()}
        reply = sites[name].masked(TaskResult(name, engine.round_number, "train", 10, {}, trained), given.payload, model)
        vector = reply.tensors[MASKED].view(np.uint64)
        if forge is not None:
            vector = forge(name, vector.copy())
        _submit(engine, name, "mask", "aggregated_model_validation", n=10)
        _submit(engine, name, "mask", "train", tensors={MASKED: vector.view(MASKED_DTYPE)}, n=10)
        _submit(engine, name, "mask", "locally_tuned_model_validation", n=10)
    assert engine.current.phase == "unmask"


def _reveal(engine, sites, name, keep=None, lie=None):
    """``name``'s reveals (only of the owners in ``keep``, if given; with a wrong share of ``lie``)
    and its correction (None: these rounds are unsigned), as its unmask reply carries them
    (its payload an indexed map over the cohort: ``sites``' names)."""
    reveals = decode(sites[name].answer("unmask", engine.round_number, engine.assignment(name).payload, engine.model), sorted(sites), "reveals")
    if keep is not None:
        reveals = {owner: data for owner, data in reveals.items() if owner in keep}
    if lie is not None:
        honest = decode_reveal(reveals[lie])
        reveals[lie] = encode_reveal(Reveal(honest.secret, honest.index, bytes(16)))
    return _submit(engine, name, "unmask", "unmask", encode(reveals, sorted(sites)), sites[name].tensors("unmask", engine.round_number))


def test_a_forged_weight_holds_the_round_and_the_next_one_runs() -> None:
    pytest.importorskip("cryptography")
    engine = make_engine(NAMES, rounds=2, strategy=SecureAggregation(FedAvgM(momentum=0.9), SETTINGS))
    sites = {name: SecureSite(name, SETTINGS) for name in NAMES}
    before = {k: v.copy() for k, v in engine.model.items()}

    def forge(name, vector):
        if name == "d":
            vector[-1] -= np.uint64(39)  # the total weight comes out 1 instead of 40
        return vector

    _to_unmask(engine, sites, forge)
    outcome = None
    for name in NAMES:
        outcome = _reveal(engine, sites, name) or outcome
    assert outcome is not None and outcome.round_number == 0
    for key, value in before.items():
        np.testing.assert_array_equal(outcome.model[key], value)
    held = [e for e in outcome.bounds if e.kind == "held" and e.collaborator == HELD_BY]
    assert held and "not the survivors' declared sample counts' sum 40" in held[0].detail
    assert engine.round_number == 1 and engine.current.phase == "advertise"


def test_an_honest_secure_round_still_steps() -> None:
    pytest.importorskip("cryptography")
    engine = make_engine(NAMES, rounds=1, strategy=SecureAggregation(FedAvgM(momentum=0.0), SETTINGS))
    sites = {name: SecureSite(name, SETTINGS) for name in NAMES}
    _to_unmask(engine, sites)
    outcome = None
    for name in NAMES:
        outcome = _reveal(engine, sites, name) or outcome
    assert outcome is not None and not outcome.bounds
    np.testing.assert_allclose(outcome.model["w"], 0.1, atol=1e-6)


@pytest.mark.parametrize("liar_at", [0, 3])
def test_a_site_revealing_a_wrong_share_is_excused_and_the_phase_closes_at_once_to_fedavg_over_the_survivors(liar_at) -> None:
    """The lowest-named site holds the lowest-index share of every other site's seed: its wrong
    reveal is refused against the owner's commitment and it is excluded; the engine then no
    longer counts it as owing its reply, so the phase closes as soon as the others' reveals
    are in (the clock never moves: not at the cut-off), whether it lied first or last."""
    pytest.importorskip("cryptography")
    clock = FakeClock()
    policy = StragglerPolicy("cutoff_time", cutoff_seconds=5.0, min_reports=1, round_deadline_seconds=60.0)
    engine = make_engine(NAMES, rounds=1, strategy=SecureAggregation(FedAvgM(momentum=0.0), SETTINGS), clock=clock, policy=policy)
    sites = {name: SecureSite(name, SETTINGS) for name in NAMES}
    values = {"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.4}
    _to_unmask(engine, sites, values=values)
    honest = ["b", "c", "d"]
    outcome = None
    for name in honest[:liar_at]:
        assert _reveal(engine, sites, name) is None  # "a" still owes its reply: the phase waits
    with pytest.raises(ExcusedRefusal, match="'a' revealed a wrong share and is excluded") as refused:
        _reveal(engine, sites, "a", lie="b")
    outcome = refused.value.outcome
    assert (outcome is None) == (liar_at == 0)
    for name in honest[liar_at:]:
        outcome = _reveal(engine, sites, name) or outcome
    assert outcome is not None and not outcome.bounds and clock.now == 0.0
    assert "a" in outcome.failed and engine.round_number == 1
    np.testing.assert_allclose(outcome.model["w"], np.mean(list(values.values())), atol=1e-6)  # "a" masked: a survivor


def test_a_refused_reveal_of_a_site_not_excluded_leaves_it_owing() -> None:
    """A malformed reveal is refused without an exclusion: the phase still waits for its sender."""
    pytest.importorskip("cryptography")
    engine = make_engine(NAMES, rounds=1, strategy=SecureAggregation(FedAvgM(momentum=0.0), SETTINGS))
    sites = {name: SecureSite(name, SETTINGS) for name in NAMES}
    _to_unmask(engine, sites)
    with pytest.raises(RefusedError) as refused:
        _submit(engine, "a", "unmask", "unmask", b"junk")
    assert not isinstance(refused.value, ExcusedRefusal)
    for name in "bcd":
        assert _reveal(engine, sites, name) is None
    assert engine.current.phase == "unmask" and engine.current.owing() == ["a"]


def test_the_unmask_phase_waits_for_reveals_past_the_cutoff_until_it_can_unmask() -> None:
    pytest.importorskip("cryptography")
    clock = FakeClock()
    policy = StragglerPolicy("cutoff_time", cutoff_seconds=5.0, min_reports=1, round_deadline_seconds=60.0)
    engine = make_engine(NAMES, rounds=1, strategy=SecureAggregation(FedAvgM(momentum=0.0), SETTINGS), clock=clock, policy=policy)
    sites = {name: SecureSite(name, SETTINGS) for name in NAMES}
    _to_unmask(engine, sites)
    _reveal(engine, sites, "a", keep={"d"})  # a leaves out b's and c's shares: b then has one of its two
    _reveal(engine, sites, "b")
    _reveal(engine, sites, "c")
    clock.now += 10.0  # past the cut-off with the threshold (3) of replies, but b's seed cannot be rebuilt
    assert engine.tick() is None and engine.current.phase == "unmask"
    outcome = _reveal(engine, sites, "d")
    assert outcome is not None and not outcome.bounds
    np.testing.assert_allclose(outcome.model["w"], 0.1, atol=1e-6)


class RefusingPhases(EchoPhases):
    def begin(self, phase, members):
        if phase == "roster":
            raise RefusedError("too few adverts", kind="state")
        super().begin(phase, members)


class RefusingPhased(Phased):
    def phased(self, context):
        self.rounds.append(RefusingPhases(context, self.threshold))
        return self.rounds[-1]


def test_a_phase_whose_begin_refuses_leaves_the_engine_in_the_phase_it_was_in() -> None:
    engine = make_engine(("x", "y", "z"), rounds=1, strategy=RefusingPhased())
    reply(engine, "x", "hello")
    reply(engine, "y", "hello")
    with pytest.raises(RefusedError, match="too few adverts"):
        reply(engine, "z", "hello")
    current = engine.current
    assert current.phase == "hello" and current.phase_index == 0 and current.members == ("x", "y", "z")
    assert not current.dropped and current.outstanding == {"x": [], "y": [], "z": []}
