"""The aggregator's mask pool (aggregator/mask_pool.py) and the sliced masks it runs
(secagg/crypto.py): a slice of a mask is that part of the whole mask bit for bit, a Masker's
buffers are its chunk, the pool's sum equals in-process expansion (and so the unmasked sum, a
wrong reveal excluded), a broken, hung or closed pool falls back, its workers survive neither
their parent's kill -9 nor die of a Ctrl-C, and only the serving CLI's runtime attaches one."""

from __future__ import annotations

import itertools
import logging
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from secagg_round import Round
from test_secure_plan import NAMES, ON

from accord.aggregator.mask_pool import SLICE, MaskPool, ring_slices
from accord.secagg import crypto
from accord.secagg.messages import SecAggRefused
from accord.secagg.params import SecAggParams
from accord.secagg.server import ServerSession

SEED = bytes(range(32))
SRC = Path(__file__).resolve().parent.parent / "src"


@pytest.fixture
def pool():
    made = MaskPool(workers=2, work_per_worker=1)  # every batch of 2+ blocks is pooled
    yield made
    made.close()


def batch(count: int) -> tuple[list[bytes], list[crypto.DroppedPair]]:
    """``count`` masks: a third self masks, the rest two dropped owners' pairs with survivors."""
    peers = [crypto.public_bytes(crypto.mask_key_from_seed(os.urandom(16))) for _ in range(count)]
    owners = [(os.urandom(16), "m-owner"), (os.urandom(16), "b-owner")]
    selves = [os.urandom(32) for _ in range(count // 3)]
    pairs = [(*owners[at % 2], peers[at], f"peer{at:03d}") for at in range(count - len(selves))]
    return selves, pairs


def keystream(key: bytes, counter: int, blocks: int) -> bytes:
    return Cipher(algorithms.AES(key), modes.CTR(counter.to_bytes(16, "big"))).encryptor().update(bytes(16 * blocks))


def test_ctr_counts_the_whole_128_bit_block() -> None:
    key = os.urandom(32)
    for counter in (0, 2**32 - 1, 2**64 - 1, 2**96 - 1):  # a carry out of each 32-bit word
        assert keystream(key, counter, 2)[16:] == keystream(key, counter + 1, 1)
    assert keystream(key, 2**128 - 1, 2)[16:] == keystream(key, 0, 1)  # wraps modulo 2^128


def test_a_slice_of_a_mask_is_that_part_of_the_whole_bit_for_bit() -> None:
    selves, pairs = batch(12)
    keys = [(key, 1) for key in selves] + crypto.pair_keys(SEED, pairs)
    length = 2 * crypto.CHUNK + 101  # three chunks
    whole = crypto.mask_total(SEED, length, selves, pairs)
    for start, stop in ((0, 1), (1, 2), (5, 6), (3, crypto.CHUNK + 7), (crypto.CHUNK - 1, length), (length - 1, length)):
        assert np.array_equal(crypto.sum_masks(keys, start, stop), whole[start:stop]), (start, stop)
    single = np.zeros(length, dtype=np.uint64)
    crypto.Masker(length).add(single, selves[0])
    assert single.tobytes()[: 16 * 4] == keystream(selves[0], 0, 4)  # the mask is the keystream from block 0


def test_a_maskers_buffers_are_its_chunk_not_the_ring() -> None:
    keys = [(os.urandom(32), 1) for _ in range(8)]
    slice_length = 8 * crypto.CHUNK
    tracemalloc.start()
    try:
        far = crypto.sum_masks(keys, 10**12, 10**12 + 1000)  # a slice far into a huge ring
        _, far_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        crypto.sum_masks(keys, 0, slice_length)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert far.shape == (1000,) and far_peak < 64 * 1024
    # the slice's total and the two chunk buffers (zeros, keystream), not a buffer per mask or per ring
    assert peak < 8 * slice_length + 2 * 8 * crypto.CHUNK + 64 * 1024


def test_workers_are_what_the_work_justifies() -> None:
    made = MaskPool(workers=16, work_per_worker=1000)
    assert made.workers_for(2170, 100_001) == 16
    assert made.workers_for(10, 150) == 1  # 1,500 mask elements: one worker's worth, in-process
    assert made.workers_for(10, 500) == 5
    assert made.workers_for(5000, 7) == 4  # no more workers than 16-byte blocks


def test_the_ring_slices_cover_it_in_blocks_of_bounded_size() -> None:
    for length, workers in ((7, 2), (8, 3), (100_001, 16), (3 * SLICE + 5, 2), (12_500_000, 2)):
        slices = ring_slices(length, workers)
        assert slices[0][0] == 0 and slices[-1][1] == length
        assert all(stop == start for (_, stop), (start, _) in itertools.pairwise(slices))  # contiguous
        assert all(start % 2 == 0 and 0 < stop - start <= SLICE for start, stop in slices)
        assert len(slices) >= min(workers, (length + 1) // 2)


def test_the_pool_sums_the_same_masks(pool: MaskPool) -> None:
    selves, pairs = batch(150)
    pooled = pool.mask_total(SEED, 1001, selves, pairs)
    assert pool._executor is not None  # it ran in the workers
    assert np.array_equal(pooled, crypto.mask_total(SEED, 1001, selves, pairs))
    assert not np.array_equal(pooled, crypto.mask_total(SEED, 1001, selves[1:], pairs))  # every mask counts
    selves, pairs = batch(6)
    length = 2 * SLICE + 3  # three slices over two workers, the last odd
    assert np.array_equal(pool.mask_total(SEED, length, selves, pairs), crypto.mask_total(SEED, length, selves, pairs))


def test_a_small_batch_stays_in_this_process() -> None:
    selves, pairs = batch(30)
    small = MaskPool(workers=2)  # 30 masks x 17 elements: far below a worker's worth
    assert np.array_equal(small.mask_total(SEED, 17, selves, pairs), crypto.mask_total(SEED, 17, selves, pairs))
    assert small._executor is None


def test_a_broken_pool_falls_back_to_this_process(pool: MaskPool, caplog: pytest.LogCaptureFixture) -> None:
    selves, pairs = batch(100)
    expected = crypto.mask_total(SEED, 33, selves, pairs)
    assert np.array_equal(pool.mask_total(SEED, 33, selves, pairs), expected)
    victim = next(iter(pool._executor._processes))  # one of the workers this test started
    os.kill(victim, signal.SIGKILL)
    with caplog.at_level(logging.WARNING, "accord.aggregator"):
        assert np.array_equal(pool.mask_total(SEED, 33, selves, pairs), expected)
    assert "the mask worker pool broke" in caplog.text
    assert np.array_equal(pool.mask_total(SEED, 33, selves, pairs), expected)  # a fresh pool after the break


def test_a_hung_worker_falls_back_to_this_process(caplog: pytest.LogCaptureFixture) -> None:
    hanging = MaskPool(workers=2, work_per_worker=1, timeout=3.0)
    try:
        hanging.start()
        workers = list(hanging._executor._processes)
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)  # alive, never answering
        selves, pairs = batch(40)
        with caplog.at_level(logging.WARNING, "accord.aggregator"):
            assert np.array_equal(hanging.mask_total(SEED, 257, selves, pairs), crypto.mask_total(SEED, 257, selves, pairs))
        assert "no answer in 3 s" in caplog.text and hanging._executor is None
        assert all(not alive(pid) for pid in workers)  # the hung workers were killed, and reaped
    finally:
        hanging.close()


class ClosedUnderTheBatch(ProcessPoolExecutor):
    """An executor closed by another thread under a batch: its futures come back cancelled."""

    def submit(self, *args: object, **kwargs: object) -> Future:
        future: Future = Future()
        future.cancel()
        return future


@pytest.mark.parametrize("closed", ["cancelled", "shut down"])
def test_a_pool_closed_under_a_batch_falls_back(closed: str, caplog: pytest.LogCaptureFixture) -> None:
    made = MaskPool(workers=2, work_per_worker=1)
    if closed == "cancelled":
        made._executor = ClosedUnderTheBatch(2)
    else:
        made._pool().shutdown()  # submit() raises RuntimeError
    selves, pairs = batch(30)
    with caplog.at_level(logging.WARNING, "accord.aggregator"):
        assert np.array_equal(made.mask_total(SEED, 65, selves, pairs), crypto.mask_total(SEED, 65, selves, pairs))
    assert "the mask worker pool broke" in caplog.text and made._executor is None


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_until(condition, cap: float = 60.0) -> bool:
    """Poll ``condition`` every 0.1 s until it holds or ``cap`` seconds passed (a generous cap)."""
    stop = time.monotonic() + cap
    while not condition():
        if time.monotonic() > stop:
            return False
        time.sleep(0.1)
    return True


HOLDER = """
import sys, time
import numpy as np
from accord.aggregator.mask_pool import SLICE, MaskPool, ring_slices
from accord.secagg import crypto

if __name__ == "__main__":
    pool = MaskPool(workers=2, work_per_worker=1)
    pool.start()
    executor = pool._executor
    try:
        print(" ".join(str(pid) for pid in executor._processes), flush=True)
        time.sleep(120)
    except KeyboardInterrupt:
        keys = [bytes(range(32)), bytes(32), bytes(range(1, 33))]
        same = np.array_equal(pool.mask_total(bytes(32), 1001, keys, []), crypto.mask_total(bytes(32), 1001, keys, []))
        print("intact" if same and pool._executor is executor else "broken", flush=True)
        pool.close()
"""


def hold_a_pool(tmp_path: Path) -> tuple[subprocess.Popen, list[int]]:
    """A real process holding a started MaskPool (its own session: a process group), its workers' pids."""
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    holder = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    assert holder.stdout is not None
    workers = [int(pid) for pid in holder.stdout.readline().split()]
    assert len(workers) == 2 and all(alive(pid) for pid in workers)
    return holder, workers


def test_no_worker_outlives_its_parent_killed_9(tmp_path: Path) -> None:
    holder, workers = hold_a_pool(tmp_path)
    holder.kill()
    holder.wait()
    assert wait_until(lambda: not any(alive(pid) for pid in workers)), [pid for pid in workers if alive(pid)]


def test_a_ctrl_c_to_the_process_group_leaves_the_pool_intact(tmp_path: Path) -> None:
    holder, workers = hold_a_pool(tmp_path)
    os.killpg(holder.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends
    out, err = holder.communicate(timeout=120)
    assert out.strip() == "intact", err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert wait_until(lambda: not any(alive(pid) for pid in workers))  # close() ended them


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


def test_only_a_runtime_that_asks_for_it_expands_masks_over_a_pool(workspace_factory) -> None:
    from accord.aggregator.runtime import AggregatorRuntime
    from accord.workspace.initialize import initialize_model

    plan = workspace_factory(NAMES, 1, ON)
    initialize_model(plan)
    in_process = AggregatorRuntime(plan)  # the native/interactive APIs': spawn would re-import the user's __main__
    try:
        assert in_process._masks is None and in_process.engine.strategy.mask_total is None
    finally:
        in_process.close()
    runtime = AggregatorRuntime(plan, pooled_masks=True)  # fx aggregator start's (aggregator/serve.py)
    try:
        assert runtime._masks is not None and runtime.engine.strategy.mask_total == runtime._masks.mask_total
        runtime._masks.start()
        assert runtime._masks._executor is not None
    finally:
        runtime.close()
    assert runtime._masks._executor is None  # closed with the runtime


def test_fx_aggregator_start_serves_with_a_pool_and_a_notebooks_aggregator_without(workspace_factory, monkeypatch) -> None:
    from accord.aggregator import serve
    from accord.cli.main import main
    from accord.pki import make_federation_pki
    from accord.workspace.initialize import initialize_model

    plan = workspace_factory(NAMES, 1, {**ON, "network.settings.agg_addr": "localhost"})
    make_federation_pki(plan.resolve_path(plan.model.network.settings.cert_dir), "localhost", NAMES)
    initialize_model(plan)
    served: list[MaskPool | None] = []
    monkeypatch.setattr(serve, "_serve", lambda runtime, *args: served.append(runtime._masks))  # what it would serve with
    assert main(["aggregator", "start", "-w", str(plan.workspace)]) == 0
    serve.start_aggregator(plan)  # the interactive API's call (interactive/experiment.py), in the user's process
    assert isinstance(served[0], MaskPool) and served[1] is None
