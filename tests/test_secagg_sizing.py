"""SecAgg+'s neighbourhood sizing (SecAggParams.for_cohort, Bell et al. 2020): k grows as O(log n),
the share threshold survives a third of the cohort dropping, and below the threshold the round
is refused."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from secagg_round import ROUND

from accord.secagg.graph import Neighbourhood
from accord.secagg.messages import SecAggRefused
from accord.secagg.params import FAILURE_LOG2, SecAggParams, failure_log2
from accord.secagg.server import ServerSession
from accord.secagg.site import SiteSession


def sized(n: int) -> SecAggParams:
    return SecAggParams.for_cohort(n, fraction_bits=16)  # 16 bits: a ring that holds a million sites' sum


def test_neighbourhoods_grow_as_log_n() -> None:
    sizes = [10**3, 10**4, 10**5, 10**6]
    ks = [sized(n).degree(n) for n in sizes]
    assert all(k % 2 == 0 and k < n - 1 for k, n in zip(ks, sizes)), ks  # SecAgg+, not plain SecAgg
    steps = np.diff(ks)
    assert (steps > 0).all() and steps.max() - steps.min() <= 4, ks  # the same step per decade: a + b log n
    assert ks[-1] < 2 * ks[0] and ks[-1] < 0.001 * sizes[-1], ks


@pytest.mark.parametrize("n", [300, 1000, 10_000])
def test_k_is_the_smallest_even_degree_under_the_failure_bound(n: int) -> None:
    k = sized(n).degree(n)
    assert failure_log2(n, k, 1 / 3) < FAILURE_LOG2 <= failure_log2(n, k - 2, 1 / 3)


@pytest.mark.parametrize(("n", "k"), [(300, 100), (1000, 312), (5000, 600)])
def test_the_failure_bound_is_the_binomial_tail_over_the_sites(n: int, k: int) -> None:
    tail = stats.binom.logcdf(k // 2, k, 2 / 3)  # fewer than k // 2 + 1 of k neighbours alive
    assert failure_log2(n, k, 1 / 3) == pytest.approx((math.log(n) + tail) / math.log(2), abs=1e-6)


@pytest.mark.parametrize("n", [4, 10, 50, 100, 250])
def test_up_to_a_few_hundred_sites_plain_secagg_survives_any_third_dropping(n: int) -> None:
    params = SecAggParams.for_cohort(n)
    assert params.degree(n) == n - 1 and params.threshold == math.ceil(2 * n / 3)
    live_neighbours = n - n // 3 - 1  # any third gone: every survivor still neighbours every other survivor
    assert live_neighbours >= params.share_threshold(n - 1) and n - n // 3 >= params.threshold


def test_a_random_third_dropping_leaves_every_site_its_share_threshold() -> None:
    n = 1000
    params = SecAggParams.for_cohort(n)
    names = [f"s{i:04d}" for i in range(n)]
    graph = Neighbourhood(params, names, ROUND)
    assert graph.degree == params.degree(n) == 312 and graph.share_threshold == 157
    rng = np.random.default_rng(12)
    for _ in range(20):
        gone = set(rng.choice(names, n // 3, replace=False))
        live = [name for name in names if name not in gone]
        fewest = min(sum(peer not in gone for peer in graph.of(name)) for name in live)
        assert fewest >= graph.share_threshold and len(live) >= params.threshold


def test_one_site_fewer_than_the_threshold_is_refused_at_a_thousand_sites() -> None:
    n = 1000
    params = SecAggParams.for_cohort(n)
    names = [f"s{i:04d}" for i in range(n)]
    assert params.threshold == 667
    for advertised, refused in ((params.threshold, False), (params.threshold - 1, True)):
        server = ServerSession(params, names, ROUND, 4)
        for name in names[:advertised]:
            server.add_advert(name, SiteSession(params, name, names, ROUND, 4, seed=name.encode()).advertise())
        if refused:
            with pytest.raises(SecAggRefused, match="only 666 sites advertised, fewer than the SecAgg threshold 667"):
                server.roster()
        else:
            assert len(server.roster()) == 667
