"""Survivors' corrections (issue 12's unmasking cost): each survivor sends, with its reveals, the
sum of its pairwise masks with the neighbours named dropped, as it added them; the aggregator
subtracts the corrections and expands a dropped site's pair mask only with a survivor that sent
none. What the unmasking is given is counted through ServerSession's injected ``mask_total``."""

from __future__ import annotations

import numpy as np
import pytest
from secagg_round import Round, ed25519_signings, plain
from test_engine import FakeClock, make_engine

from accord.aggregator.stragglers import StragglerPolicy
from accord.collaborator.secure_site import SecureSite
from accord.errors import RefusedError
from accord.messages import TaskResult
from accord.plan.aggregator_settings import SecureAggregationSettings
from accord.secagg import crypto
from accord.secagg.messages import SECRET_MASK_KEY, Reveal, SecAggRefused, decode_reveal, encode_reveal
from accord.strategies.fedavg import FedAvg
from accord.strategies.secure import SecureAggregation
from accord.strategies.secure_phases import CORRECTION, MASKED_DTYPE
from accord.strategies.secure_phases import decode_entries as decode

DROPPED = {"site001", "site005"}


class Counting:
    """crypto.mask_total, recording what each call is given: (self keys, (dropped, survivor) pairs)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, set[tuple[str, str]]]] = []

    def __call__(self, round_seed, length, self_keys, pairs):
        self.calls.append((len(self_keys), {(owner, peer) for _, owner, _, peer in pairs}))
        return crypto.mask_total(round_seed, length, self_keys, pairs)


def _federation(count: int = 9) -> tuple[Round, Counting]:
    """A signed round (corrections need the consistency check: an unsigned session sends none)."""
    counting = Counting()
    signings = ed25519_signings(f"site{i:03d}" for i in range(count))
    verify = next(iter(signings.values())).verify
    return Round(plain(count), count, 16, mask_total=counting, signings=signings, verify=verify), counting


def _confirmed() -> tuple[Round, Counting, list[str], list[str], dict[str, bytes]]:
    """A signed round through its consistency check, DROPPED gone before masking."""
    federation, counting = _federation()
    federation.advertise()
    federation.share()
    survivors, dropped = federation.mask(DROPPED)
    return federation, counting, survivors, dropped, federation.confirm()


def _pairs_of(federation: Round, survivor: str) -> set[tuple[str, str]]:
    """The (dropped, survivor) pairs whose mask ``survivor`` added: the dropped sites whose shares reached it."""
    return {(owner, survivor) for owner in federation.dropped if survivor in federation.sent[owner]}


def test_with_every_survivors_correction_the_aggregator_expands_no_pair_mask() -> None:
    federation, counting = _federation()
    federation.check(federation.run({"mask": DROPPED}))
    assert sorted(federation.dropped) == sorted(DROPPED)
    assert counting.calls == [(7, set())]  # the 7 survivors' self masks, nothing else


@pytest.mark.parametrize("how", ["reveal", "correction"])
def test_a_survivor_without_a_correction_has_exactly_its_pairs_with_the_dropped_expanded(how: str) -> None:
    """It dropped during the unmask (no reply at all), or revealed without a correction."""
    federation, counting = _federation()
    federation.check(federation.run({"mask": DROPPED, how: {"site003"}}))
    expanded = _pairs_of(federation, "site003")
    assert len(expanded) == 2 and counting.calls == [(7, expanded)]  # its self mask still removed from its neighbours' shares


def _without_mask_key_shares(uncorrected: set[str]) -> tuple[Round, Counting]:
    """A round whose survivors reveal no share of the dropped sites' mask keys, each with its
    correction but those in ``uncorrected``."""
    federation, counting, survivors, dropped, confirmations = _confirmed()
    for name in survivors:
        site = federation.sites[name]
        reveals = site.unmask(survivors, dropped, confirmations)
        kept = {owner: data for owner, data in reveals.items() if decode_reveal(data).secret != SECRET_MASK_KEY}
        federation.server.add_reveal(name, kept, None if name in uncorrected else site.correction())
    return federation, counting


def test_a_dropped_sites_mask_key_is_needed_only_while_a_pair_of_it_lacks_a_correction() -> None:
    """The survivors leave out their shares of the dropped sites' mask keys: with every
    correction the round unmasks all the same; without one, it waits for those shares."""
    federation, _ = _without_mask_key_shares({"site008"})
    assert not federation.server.ready  # site008 added the dropped sites' pair masks and did not correct them
    with pytest.raises(SecAggRefused, match=r"cannot unmask: sites \['site001', 'site005'\] have fewer than"):
        federation.server.result()
    federation, counting = _without_mask_key_shares(set())
    assert federation.server.ready
    federation.check(federation.server.result())
    assert counting.calls == [(7, set())]


def test_an_excluded_survivors_correction_is_not_used() -> None:
    """A survivor that reveals a wrong share is excluded with its whole reply: its correction is
    not subtracted, its pairs with the dropped are expanded, and the sum is still right."""
    federation, counting, survivors, dropped, confirmations = _confirmed()
    for name in survivors:
        site = federation.sites[name]
        reveals = site.unmask(survivors, dropped, confirmations)
        if name == "site003":
            owner = next(iter(reveals))
            honest = decode_reveal(reveals[owner])
            reveals = {**reveals, owner: encode_reveal(Reveal(honest.secret, honest.index, bytes(16)))}
            with pytest.raises(SecAggRefused, match="'site003' revealed a wrong share and is excluded"):
                federation.server.add_reveal(name, reveals, site.correction())
            continue
        federation.server.add_reveal(name, reveals, site.correction())
    federation.check(federation.server.result())
    assert counting.calls == [(7, _pairs_of(federation, "site003"))]


def test_a_malformed_or_second_correction_is_refused_by_name_and_takes_nothing() -> None:
    federation, _, survivors, dropped, confirmations = _confirmed()
    site, server, size = federation.sites["site000"], federation.server, federation.length + 1
    reveals, correction = site.unmask(survivors, dropped, confirmations), site.correction()
    for bad, shown in (
        (correction.view(np.int64), f"int64 of shape \\({size},\\)"),
        (correction[:-1], f"uint64 of shape \\({size - 1},\\)"),
        (list(correction), "a list"),
    ):
        with pytest.raises(
            SecAggRefused, match=f"the correction from 'site000' is {shown}, expected uint64 of shape \\({size},\\)"
        ) as refused:
            server.add_reveal("site000", reveals, bad)
        assert "SiteSession.correction" in refused.value.fix
    server.add_reveal("site000", reveals, correction)  # the refused replies took nothing: the honest one is taken
    with pytest.raises(SecAggRefused, match="'site000' already sent its reveals and correction this round"):
        server.add_reveal("site000", reveals, correction)
    for name in survivors[1:]:
        server.add_reveal(name, federation.sites[name].unmask(survivors, dropped, confirmations), federation.sites[name].correction())
    federation.check(server.result())


def test_a_sites_correction_follows_its_reveals_and_is_the_same_on_a_retry() -> None:
    federation, _, survivors, dropped, confirmations = _confirmed()
    site = federation.sites["site000"]
    with pytest.raises(SecAggRefused, match="'site000' has answered no unmask request: its correction follows its reveals"):
        site.correction()
    site.unmask(survivors, dropped, confirmations)
    first = site.correction()
    assert first.dtype == np.uint64 and first.shape == (federation.length + 1,) and first.any()
    np.testing.assert_array_equal(site.correction(), first)
    # its pair masks with the two dropped, as it added them (it sorts first: +)
    expected = np.zeros_like(first)
    masker = crypto.Masker(len(expected))
    for owner in sorted(dropped):
        masker.add(
            expected,
            crypto.pair_mask_key(
                federation.sites[owner]._s_sk, site._roster["site000"].s_pk, owner, "site000", federation.server.round_seed
            ),
        )
    np.testing.assert_array_equal(first, expected)


def test_an_unsigned_session_neither_makes_nor_takes_a_correction() -> None:
    """Without the consistency check an aggregator could name a site survivor to some of its
    neighbours (their shares of its self-mask seed) and dropped to the others (their corrections:
    its pair masks with them), so the unsigned session's aggregator expands the pairs itself."""
    counting = Counting()
    federation = Round(plain(9), 9, 16, mask_total=counting)
    federation.advertise()
    federation.share()
    survivors, dropped = federation.mask(DROPPED)
    site = federation.sites["site000"]
    reveals = site.unmask(survivors, dropped)
    with pytest.raises(SecAggRefused, match="'site000' has no signing key: an unsigned session sends no correction"):
        site.correction()
    signed, _ = _federation()
    signed.advertise()
    signed.share()
    signed.mask(DROPPED)
    confirmations = signed.confirm()
    forged = signed.sites["site000"]
    forged.unmask(signed.survivors, signed.dropped, confirmations)
    with pytest.raises(SecAggRefused, match="come with a correction, but this session is unsigned"):
        federation.server.add_reveal("site000", reveals, forged.correction())
    federation.server.add_reveal("site000", reveals)  # the refused reply took nothing
    for name in survivors[1:]:
        federation.server.add_reveal(name, federation.sites[name].unmask(survivors, dropped))
    federation.check(federation.server.result())
    assert counting.calls == [(7, {pair for name in survivors for pair in _pairs_of(federation, name)})]


def test_a_correction_is_zero_when_no_neighbour_dropped() -> None:
    federation, _ = _federation()
    federation.advertise()
    federation.share()
    survivors, dropped = federation.mask()
    assert dropped == []
    confirmations = federation.confirm()
    for name in survivors:
        federation.sites[name].unmask(survivors, dropped, confirmations)
        assert not federation.sites[name].correction().any()


NAMES, VALUES = ("a", "b", "c", "d"), {"a": 0.1, "b": 0.2, "c": 0.6}  # d trains no more


def _secure_engine(clock: FakeClock, signings: dict, **options):
    """SecureAggregation(FedAvg) over the engine (signed if ``signings``), its mask_total counted."""
    settings = SecureAggregationSettings(enabled=True)
    strategy = SecureAggregation(FedAvg(), settings, verify=signings["a"].verify if signings else None)
    strategy.mask_total = counting = Counting()
    policy = StragglerPolicy("cutoff_time", cutoff_seconds=5.0, min_reports=1, round_deadline_seconds=60.0)
    return make_engine(NAMES, rounds=1, strategy=strategy, clock=clock, policy=policy, **options), counting


def _submit(engine, name, task, tensors=None, n=0, payload=b""):
    metrics = {"accuracy": 0.5} if "validation" in task else {}
    phase = engine.current.phase
    return engine.submit(TaskResult(name, 0, task, n, metrics, tensors, model_digest=engine.model_digest, phase=phase, payload=payload))


def _to_unmask(engine, clock: FakeClock, sites: dict[str, SecureSite], signed: bool) -> None:
    """Every phase up to the unmask: d drops at the mask phase's cut-off."""
    for phase in ("advertise", "share"):
        for name in NAMES:
            _submit(engine, name, phase, payload=sites[name].answer(phase, 0, engine.assignment(name).payload, engine.model))
    for name in VALUES:
        given, model = engine.assignment(name), engine.model
        trained = {k: np.full_like(v, VALUES[name]) for k, v in model.items()}
        masked = sites[name].masked(TaskResult(name, 0, "train", 10, {}, trained), given.payload, model)
        _submit(engine, name, "aggregated_model_validation", n=10)
        _submit(engine, name, "train", masked.tensors, n=10)
        _submit(engine, name, "locally_tuned_model_validation", n=10)
    clock.now += 6.0
    assert engine.tick() is None
    if signed:
        assert engine.current.phase == "confirm"
        for name in VALUES:
            _submit(engine, name, "confirm", payload=sites[name].answer("confirm", 0, engine.assignment(name).payload, engine.model))
    assert engine.current.phase == "unmask"


def _reply(engine, sites: dict[str, SecureSite], name: str):
    reveals = sites[name].answer("unmask", 0, engine.assignment(name).payload, engine.model)
    return _submit(engine, name, "unmask", sites[name].tensors("unmask", 0), payload=reveals)


@pytest.mark.parametrize("signed", [True, False])
def test_the_unmask_replies_carry_the_corrections_through_the_engine(signed: bool) -> None:
    """SecureAggregation over the engine: a site drops at the mask phase's cut-off; in a signed
    round the others' unmask replies carry their correction (CORRECTION) beside the reveals,
    and the round steps to FedAvg over the survivors with no pairwise mask expanded; an
    unsigned round's replies carry none, and its aggregator expands the dropped site's pairs."""
    clock = FakeClock()
    signings = ed25519_signings(NAMES) if signed else {}
    engine, counting = _secure_engine(clock, signings)
    settings = SecureAggregationSettings(enabled=True)
    sites = {name: SecureSite(name, settings, signings.get(name)) for name in NAMES}
    _to_unmask(engine, clock, sites, signed)
    if signed:
        assert engine.expected_tensors() == {CORRECTION: (MASKED_DTYPE, (sum(v.size for v in engine.model.values()) + 1,))}
        with pytest.raises(RefusedError, match=r"may carry the one tensor 'secagg\.correction' only"):
            _submit(engine, "a", "unmask", {"other": np.zeros(3)}, payload=b"")
    else:
        assert engine.expected_tensors() == {}
    outcome = None
    for name in VALUES:
        reveals = sites[name].answer("unmask", 0, engine.assignment(name).payload, engine.model)
        tensors = sites[name].tensors("unmask", 0)
        assert (set(tensors) == {CORRECTION} if signed else tensors is None) and set(decode(reveals, NAMES, "reveals")) == set(NAMES) - {name}
        outcome = _submit(engine, name, "unmask", tensors, payload=reveals)
    assert outcome is not None and not outcome.bounds and outcome.stragglers == ("d",)
    np.testing.assert_allclose(outcome.model["w"], np.mean(list(VALUES.values())), atol=1e-6)
    assert counting.calls == [(3, set() if signed else {("d", name) for name in VALUES})]


def test_a_signed_round_resumed_mid_unmask_takes_the_corrections_again(tmp_path) -> None:
    """Two survivors reply (reveals and correction), then the aggregator dies: a fresh engine
    from the phase checkpoint takes every survivor's retried reply, the same correction
    recomputed, and unmasks with no pairwise mask expanded though d dropped."""
    from accord.aggregator import phase_checkpoint

    clock, signings = FakeClock(), ed25519_signings(NAMES)
    engine, _ = _secure_engine(clock, signings)
    settings = SecureAggregationSettings(enabled=True)
    sites = {name: SecureSite(name, settings, signings[name]) for name in NAMES}
    _to_unmask(engine, clock, sites, signed=True)
    checkpoint = engine.phase_checkpoint()
    for name in "ab":
        _reply(engine, sites, name)
    corrections = {name: sites[name].tensors("unmask", 0)[CORRECTION].copy() for name in "ab"}
    assert all(c.any() for c in corrections.values())  # d dropped: non-zero corrections
    phase_checkpoint.save(tmp_path, checkpoint)
    restarted, counting = _secure_engine(clock, signings, resume=phase_checkpoint.load(tmp_path))
    assert restarted.current.phase == "unmask"
    outcome = None
    for name in VALUES:
        outcome = _reply(restarted, sites, name) or outcome
    np.testing.assert_array_equal(sites["a"].tensors("unmask", 0)[CORRECTION], corrections["a"])
    assert outcome is not None and outcome.stragglers == ("d",)
    np.testing.assert_allclose(outcome.model["w"], np.mean(list(VALUES.values())), atol=1e-6)
    assert counting.calls == [(3, set())]
