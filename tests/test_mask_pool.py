"""The aggregator's mask pool (aggregator/mask_pool.py): the same masks' sum as in-process
expansion, the same unmasked sum (a wrong reveal excluded), a broken pool falls back, and the
runtime of a secure plan sets and closes it."""

from __future__ import annotations

import logging
import os
import signal

import numpy as np
import pytest
from secagg_round import Round
from test_secure_plan import NAMES, ON

from accord.aggregator.mask_pool import MIN_POOLED, MaskPool
from accord.secagg import crypto
from accord.secagg.messages import SecAggRefused
from accord.secagg.params import SecAggParams
from accord.secagg.server import ServerSession

SEED = bytes(range(32))


@pytest.fixture
def pool():
    made = MaskPool(workers=2)
    yield made
    made.close()


def batch(count: int) -> tuple[list[bytes], list[crypto.DroppedPair]]:
    """``count`` masks: a third self masks, the rest two dropped owners' pairs with survivors."""
    peers = [crypto.public_bytes(crypto.mask_key_from_seed(os.urandom(16))) for _ in range(count)]
    owners = [(os.urandom(16), "m-owner"), (os.urandom(16), "b-owner")]
    selves = [os.urandom(32) for _ in range(count // 3)]
    pairs = [(*owners[at % 2], peers[at], f"peer{at:03d}") for at in range(count - len(selves))]
    return selves, pairs


def test_the_pool_sums_the_same_masks(pool: MaskPool) -> None:
    selves, pairs = batch(3 * MIN_POOLED)
    pooled = pool.mask_total(SEED, 1001, selves, pairs)
    assert pool._executor is not None  # it ran in the workers
    assert np.array_equal(pooled, crypto.mask_total(SEED, 1001, selves, pairs))
    assert not np.array_equal(pooled, crypto.mask_total(SEED, 1001, selves[1:], pairs))  # every mask counts


def test_a_small_batch_stays_in_this_process(pool: MaskPool) -> None:
    selves, pairs = batch(MIN_POOLED - 1)
    assert np.array_equal(pool.mask_total(SEED, 17, selves, pairs), crypto.mask_total(SEED, 17, selves, pairs))
    assert pool._executor is None


def test_a_broken_pool_falls_back_to_this_process(pool: MaskPool, caplog: pytest.LogCaptureFixture) -> None:
    selves, pairs = batch(2 * MIN_POOLED)
    expected = crypto.mask_total(SEED, 33, selves, pairs)
    assert np.array_equal(pool.mask_total(SEED, 33, selves, pairs), expected)
    victim = next(iter(pool._executor._processes))  # one of the workers this test started
    os.kill(victim, signal.SIGKILL)
    with caplog.at_level(logging.WARNING, "accord.aggregator"):
        assert np.array_equal(pool.mask_total(SEED, 33, selves, pairs), expected)
    assert "the mask worker pool broke" in caplog.text
    assert np.array_equal(pool.mask_total(SEED, 33, selves, pairs), expected)  # a fresh pool after the break


def pooled_round(pool: MaskPool, params: SecAggParams, count: int, seed: int) -> Round:
    federation = Round(params, count, 33, seed=seed)
    federation.server = ServerSession(params, federation.names, federation.server.round_seed, 33, mask_total=pool.mask_total)
    return federation


def test_a_pooled_unmasking_equals_the_plain_sum_with_dropouts(pool: MaskPool) -> None:
    federation = pooled_round(pool, SecAggParams.for_cohort(30), 30, seed=4)
    n = federation.names
    result = federation.run({"mask": set(n[:6]), "reveal": set(n[6:9])})  # 6 dropped x 24 survivors + 24 self masks
    federation.check(result)
    assert len(federation.dropped) == 6 and pool._executor is not None


def test_a_wrong_reveal_of_a_dropped_sites_key_is_excluded_in_a_pooled_unmasking(pool: MaskPool) -> None:
    federation = pooled_round(pool, SecAggParams.for_cohort(24), 24, seed=5)
    federation.advertise()
    federation.share()
    survivors, dropped = federation.mask(federation.names[:3])
    victim = dropped[0]
    liar = federation.names[3]  # the lowest-index holder of the victim's shares that survived
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
    assert pool._executor is not None  # 3 dropped x 21 survivors + 21 self masks: pooled


def test_the_runtime_of_a_secure_plan_expands_masks_over_its_pool(workspace_factory) -> None:
    from accord.aggregator.runtime import AggregatorRuntime
    from accord.workspace.initialize import initialize_model

    plan = workspace_factory(NAMES, 1, ON)
    initialize_model(plan)
    runtime = AggregatorRuntime(plan)
    try:
        assert runtime._masks is not None and runtime.engine.strategy.mask_total == runtime._masks.mask_total
        runtime._masks.mask_total(SEED, 9, *batch(MIN_POOLED))
        assert runtime._masks._executor is not None
    finally:
        runtime.close()
    assert runtime._masks._executor is None  # closed with the runtime
