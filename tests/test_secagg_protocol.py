"""The SecAgg+ protocol library (accord.secagg), pure: the unmasked sum, dropouts at every phase,
the threshold, the secrets an honest site never reveals, and the server's view of one update."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from secagg_round import PHASES, ROUND, Round, masked_round, plain

from accord.secagg import crypto, encoding, shamir
from accord.secagg.graph import Neighbourhood
from accord.secagg.messages import SECRET_MASK_KEY, SECRET_SELF, SecAggRefused, decode_advert, decode_reveal
from accord.secagg.params import SecAggParams


@pytest.mark.parametrize(
    ("count", "params"),
    [
        (10, SecAggParams.for_cohort(10)),  # plain SecAgg: everyone neighbours everyone
        (24, SecAggParams(threshold=16, neighbours=10, clip=1.0)),  # SecAgg+: a 10-regular graph
    ],
)
def test_unmasked_sum_equals_the_plain_weighted_sum(count: int, params: SecAggParams) -> None:
    federation = Round(params, count, 257)
    result = federation.run()
    federation.check(result)
    assert federation.survivors == federation.names


def test_for_cohort_defaults() -> None:
    small, large = SecAggParams.for_cohort(100), SecAggParams.for_cohort(2000)
    assert (small.threshold, small.neighbours) == (67, 99)  # at 100 sites only plain SecAgg survives a third reliably
    assert large.threshold == 1334 and large.neighbours < 400 and large.neighbours % 2 == 0
    fewer = SecAggParams.for_cohort(100, dropout=0.1)  # fewer dropouts expected: a smaller neighbourhood
    assert (fewer.threshold, fewer.neighbours) == (90, 34)
    graph = Neighbourhood(large, [f"s{i}" for i in range(2000)], ROUND)
    assert all(len(graph.of(f"s{i}")) == large.neighbours for i in range(0, 2000, 97))
    assert all(f"s{i}" in graph.of(peer) for i in range(0, 2000, 97) for peer in graph.of(f"s{i}"))  # symmetric


@pytest.mark.parametrize("phase", PHASES)
def test_a_third_dropping_at_one_phase_is_recovered(phase: str) -> None:
    federation = Round(plain(12), 12, 64, seed=1)
    dropped = set(federation.names[1::3])  # 4 of 12
    result = federation.run({phase: dropped})
    federation.check(result)
    if phase in ("advertise", "share", "mask"):
        assert not set(federation.survivors) & dropped
    else:  # masked, then vanished: still in the sum, its self mask removed from others' shares
        assert set(federation.survivors) >= dropped


def test_dropouts_at_every_phase_together_are_recovered() -> None:
    federation = Round(plain(15), 15, 100, seed=2)
    n = federation.names
    result = federation.run({"advertise": {n[0]}, "share": {n[4], n[5]}, "mask": {n[7]}, "reveal": {n[9]}})
    federation.check(result)
    assert len(federation.survivors) == 11


def test_secagg_plus_recovers_random_dropouts() -> None:
    params = SecAggParams(threshold=20, neighbours=16, clip=1.0)
    federation = Round(params, 30, 50, seed=3)
    rng = np.random.default_rng(3)
    lost = rng.choice(federation.names, 6, replace=False)
    result = federation.run({"share": set(lost[:3]), "mask": set(lost[3:5]), "reveal": {lost[5]}})
    federation.check(result)


def test_below_threshold_is_refused_by_the_server_and_by_the_sites() -> None:
    federation = Round(plain(9), 9, 8)  # threshold 6
    with pytest.raises(SecAggRefused, match="fewer than the SecAgg threshold 6"):
        federation.run({"mask": set(federation.names[:4])})
    # The sites refuse too, when an aggregator claims fewer survivors than the threshold.
    site = federation.sites[federation.names[5]]
    with pytest.raises(SecAggRefused, match="5 survivors, fewer than the threshold 6"):
        site.unmask(federation.names[4:], [])
    # Fewer reveals than a site's share threshold: the sum stays masked.
    federation = Round(plain(9), 9, 8)
    with pytest.raises(AssertionError):  # run() checks ready before result()
        federation.run({"reveal": set(federation.names[:5])})
    assert not federation.server.ready
    with pytest.raises(SecAggRefused, match="fewer than 5 revealed shares"):
        federation.server.result()


def test_an_honest_site_never_reveals_both_secrets_of_one_site() -> None:
    federation, survivors, _ = masked_round()
    victim, asked = survivors[0], federation.sites[survivors[1]]
    # Named both survivor and dropped in one request: refused.
    with pytest.raises(SecAggRefused, match=r"named both survivor and dropped"):
        asked.unmask(survivors, [victim])
    # One answer, then a different question: refused.
    answer = asked.unmask(survivors, [])
    assert asked.unmask(survivors, []) == answer  # a retry gets the same answer
    with pytest.raises(SecAggRefused, match="already answered an unmask request"):
        asked.unmask([name for name in survivors if name != victim], [victim])


def test_inconsistent_questions_to_different_sites_cannot_rebuild_both_secrets() -> None:
    """What holds: each site's shares need a strict majority of its neighbours, and each honest
    neighbour answers once; so telling some neighbours 'victim survived' and the others 'victim
    dropped' yields a majority of at most one kind of share."""
    federation, survivors, _ = masked_round()
    victim = survivors[0]
    graph = Neighbourhood(federation.params, federation.names, ROUND)
    holders = graph.of(victim)
    need = graph.share_threshold
    assert 2 * need > len(holders)  # a strict majority
    told_alive, told_dropped = holders[:need], holders[need:]  # the most s-shares it can get beside enough b-shares
    alive = [n for n in survivors if n != victim]
    b_shares, s_shares = [], []
    for name in told_alive:
        reveal = decode_reveal(federation.sites[name].unmask(survivors, [])[victim])
        assert reveal.secret == SECRET_SELF
        b_shares.append((reveal.index, reveal.share))
    for name in told_dropped:
        reveal = decode_reveal(federation.sites[name].unmask(alive, [victim])[victim])
        assert reveal.secret == SECRET_MASK_KEY
        s_shares.append((reveal.index, reveal.share))
    assert len(b_shares) >= need > len(s_shares)
    # Asking the b-holders again, now for the mask key, is refused: each answers once.
    with pytest.raises(SecAggRefused, match="already answered"):
        federation.sites[told_alive[0]].unmask(alive, [victim])
    # The minority of mask-key shares does not rebuild the victim's mask key.
    advert = decode_advert(federation.sites[victim].advertise())
    assert crypto.public_bytes(crypto.mask_key_from_seed(shamir.combine_all({victim: s_shares}, len(s_shares))[victim])) != advert.s_pk


def test_the_servers_view_of_one_masked_update_is_uniform() -> None:
    """A chi-square test on the bytes and a KS test on the ring elements of one site's masked
    update; the same tests reject the unmasked encoding (so they can fail)."""
    length = 40_000
    federation = Round(plain(5), 5, length, seed=7)
    site = federation.names[2]
    federation.updates[site] = np.zeros(length)  # the most structured input there is
    federation.updates[site][::2] = 0.25
    captured: dict[str, np.ndarray] = {}
    add = federation.server.add_masked

    def spy(name: str, masked: np.ndarray, weight: int | None = None) -> None:
        captured[name] = masked.copy()
        add(name, masked, weight)

    federation.server.add_masked = spy  # type: ignore[method-assign]
    federation.check(federation.run())

    def uniform_p(values: np.ndarray) -> tuple[float, float]:
        counts = np.bincount(values.view(np.uint8), minlength=256)
        chi = stats.chisquare(counts).pvalue
        ks = stats.kstest(values.astype(np.float64) / 2.0**64, "uniform").pvalue
        return float(chi), float(ks)

    chi, ks = uniform_p(captured[site])
    assert chi > 1e-4 and ks > 1e-4
    clear = encoding.encode(federation.params, federation.updates[site], federation.weights[site], length)
    chi, ks = uniform_p(clear)
    assert chi < 1e-10 and ks < 1e-10


def test_reveals_of_the_wrong_secret_or_index_are_refused_and_the_round_unmasks() -> None:
    federation = Round(plain(7), 7, 4)
    server, sites, names = federation.server, federation.sites, federation.names
    federation.advertise()
    federation.share()
    survivors, dropped = federation.mask(skip=[names[0]])
    assert dropped == [names[0]]
    reveals = sites[names[1]].unmask(survivors, dropped)
    honest = sites[names[2]].unmask(survivors, dropped)
    with pytest.raises(SecAggRefused, match="reveal by 'site002' of a share of 'site003' is of the other secret"):
        server.add_reveal(names[2], {**honest, names[3]: reveals[names[0]]})
    with pytest.raises(SecAggRefused, match="reveal by 'site002' of a share of 'site003' has index"):
        server.add_reveal(names[2], {**honest, names[3]: reveals[names[3]]})
    for name in names[1:]:
        server.add_reveal(name, sites[name].unmask(survivors, dropped))
    federation.check(server.result())


@pytest.mark.parametrize("count", [4, 5, 6, 7])
@pytest.mark.parametrize("phase", ["mask", "reveal"])
def test_small_cohorts_survive_a_third_dropping(count: int, phase: str) -> None:
    federation = Round(plain(count), count, 16, seed=count)
    federation.check(federation.run({phase: set(federation.names[: count // 3])}))


@settings(max_examples=25, deadline=None)
@given(st.integers(6, 10), st.lists(st.sampled_from(PHASES), min_size=10, max_size=10), st.integers(0, 2**16))
def test_any_third_dropping_over_any_phases_is_recovered(count: int, phases: list[str], seed: int) -> None:
    """Plain SecAgg: any floor(n/3) sites, each dropping before any phase, leave the right sum."""
    federation = Round(plain(count), count, 8, seed=seed % 256)
    rng = np.random.default_rng(seed)
    lost = rng.choice(federation.names, count // 3, replace=False)
    drops: dict[str, set[str]] = {}
    for name, phase in zip(lost, phases):
        drops.setdefault(phase, set()).add(str(name))
    federation.check(federation.run(drops))
