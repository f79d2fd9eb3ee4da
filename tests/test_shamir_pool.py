"""The aggregator's Shamir pool (aggregator/shamir_pool.py): the same secrets as in-process
reconstruction, the same unmasked sum (a wrong reveal excluded), a broken pool falls back,
and the runtime of a secure plan sets and closes it."""

from __future__ import annotations

import logging
import os
import signal

import pytest
from secagg_round import Round
from test_secure_plan import NAMES, ON

from accord.aggregator.shamir_pool import MIN_POOLED, ShamirPool
from accord.secagg import crypto
from accord.secagg.messages import SecAggRefused
from accord.secagg.params import SecAggParams
from accord.secagg.server import ServerSession


@pytest.fixture
def pool():
    made = ShamirPool(workers=2)
    yield made
    made.close()


def batches(count: int) -> tuple[list[bytes], list[list[tuple[int, bytes]]]]:
    secrets = [os.urandom(16) for _ in range(count)]
    return secrets, [crypto.split(secret, 5, 9)[2:7] for secret in secrets]


def test_the_pool_rebuilds_the_same_secrets_in_order(pool: ShamirPool) -> None:
    secrets, shares = batches(3 * MIN_POOLED)
    assert pool.combine_all(shares) == secrets == crypto.combine_all(shares)
    assert pool._executor is not None  # it ran in the workers


def test_a_small_batch_stays_in_this_process(pool: ShamirPool) -> None:
    secrets, shares = batches(MIN_POOLED - 1)
    assert pool.combine_all(shares) == secrets
    assert pool._executor is None


def test_a_broken_pool_falls_back_to_this_process(pool: ShamirPool, caplog: pytest.LogCaptureFixture) -> None:
    secrets, shares = batches(2 * MIN_POOLED)
    assert pool.combine_all(shares) == secrets
    victim = next(iter(pool._executor._processes))  # one of the workers this test started
    os.kill(victim, signal.SIGKILL)
    with caplog.at_level(logging.WARNING, "accord.aggregator"):
        assert pool.combine_all(shares) == secrets
    assert "the Shamir worker pool broke" in caplog.text
    assert pool.combine_all(shares) == secrets  # a fresh pool after the break


def pooled_round(pool: ShamirPool, params: SecAggParams, count: int, seed: int) -> Round:
    federation = Round(params, count, 33, seed=seed)
    federation.server = ServerSession(params, federation.names, federation.server.round_seed, 33, combine_all=pool.combine_all)
    return federation


def test_a_pooled_unmasking_equals_the_plain_sum_with_dropouts(pool: ShamirPool) -> None:
    federation = pooled_round(pool, SecAggParams.for_cohort(30), 30, seed=4)
    n = federation.names
    result = federation.run({"mask": set(n[:6]), "reveal": set(n[6:9])})  # 6 dropped: their keys rebuilt too
    federation.check(result)
    assert len(federation.dropped) == 6 and pool._executor is not None


def test_a_wrong_reveal_of_a_dropped_sites_key_is_excluded_in_a_pooled_unmasking(pool: ShamirPool) -> None:
    federation = pooled_round(pool, SecAggParams.for_cohort(24), 24, seed=5)
    federation.advertise()
    federation.share()
    survivors, dropped = federation.mask(federation.names[:2])
    victim = dropped[0]
    liar = federation.names[2]  # the lowest-index holder of the victim's shares that survived
    for name in survivors:
        reveals = federation.sites[name].unmask(survivors, dropped)
        if name == liar:
            forged = bytearray(reveals[victim])
            forged[-1] ^= 0xFF
            with pytest.raises(SecAggRefused, match=f"{liar!r} revealed a wrong share"):
                federation.server.add_reveal(name, {**reveals, victim: bytes(forged)})
            continue
        federation.server.add_reveal(name, reveals)
    assert set(federation.server.excluded) == {liar}
    federation.check(federation.server.result())


def test_the_runtime_of_a_secure_plan_rebuilds_secrets_over_its_pool(workspace_factory) -> None:
    from accord.aggregator.runtime import AggregatorRuntime
    from accord.workspace.initialize import initialize_model

    plan = workspace_factory(NAMES, 1, ON)
    initialize_model(plan)
    runtime = AggregatorRuntime(plan)
    try:
        assert runtime._shamir is not None and runtime.engine.strategy.combine_all == runtime._shamir.combine_all
        runtime._shamir.combine_all(batches(MIN_POOLED)[1])
        assert runtime._shamir._executor is not None
    finally:
        runtime.close()
    assert runtime._shamir._executor is None  # closed with the runtime
