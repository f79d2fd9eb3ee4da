"""The aggregator process's own thread pools: BLAS on one thread."""

from __future__ import annotations


def limit_blas_threads() -> None:
    """Run NumPy's BLAS on one thread in this process, for good (call once NumPy is loaded).

    The aggregator's maths is one block at a time (FedAvg's change norms of each result on the
    acknowledgement's path, the mean at the close), far too small to gain from BLAS threads,
    and OpenBLAS's threads spin-wait after every call: on the two busy cores the sites train
    on, that spinning was about a third of the aggregator's CPU time in a round of 8 sites
    (bench/round_time.py), time taken from the sites' training.
    """
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]  # scikit-learn's dependency, so Accord's

    threadpool_limits(limits=1, user_api="blas")
