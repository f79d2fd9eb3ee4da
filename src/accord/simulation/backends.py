"""Where simulated clients run: a small pool of threads in this process, or a Ray cluster.

A backend runs batches of clients (:func:`accord.simulation.clients.run_clients`) and returns
a ``concurrent.futures.Future`` of each batch's runs. Values used by every batch of a round
(the client_fn, the global model) are ``share``d once: Ray puts them in its object store.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

from accord.errors import AccordError
from accord.simulation.clients import ClientJob, ClientRun, run_clients

BACKENDS = ("threads", "ray")


class Backend(Protocol):
    """Runs batches of simulated clients; ``workers`` is how many run at once, ``max_batch`` the
    most clients a batch holds (a batch's results are all held until it ends)."""

    workers: int
    max_batch: int

    def share(self, value: Any) -> Any:
        """A handle on ``value`` that ``run`` takes in its place (sent once to the workers)."""

    def run(self, client_fn: Any, setup: Any, job: ClientJob, model: Any, cids: Sequence[str]) -> Future[list[ClientRun]]:
        """The runs of ``cids``' tasks of ``job`` (``client_fn``, ``setup``, ``model``: shared handles)."""

    def close(self, wait: bool = True) -> None:
        """Stop the workers, after the batches running now unless not ``wait`` (a Ray cluster
        this backend did not start is left running)."""


class ThreadBackend:
    """``workers`` threads (default: this machine's cores), never one per client. A batch is
    one pool submission (microseconds), so batches stay small: what the round holds in
    finished but not yet taken results is O(workers x 16 clients)."""

    max_batch = 16

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="accord-sim")

    def share(self, value: Any) -> Any:
        return value

    def run(self, client_fn: Any, setup: Any, job: ClientJob, model: Any, cids: Sequence[str]) -> Future[list[ClientRun]]:
        return self._pool.submit(run_clients, client_fn, setup, job, model, cids)

    def close(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=True)


class RayBackend:
    """Ray tasks of one CPU each, on the cluster at ``address`` (``"auto"``: the one ``ray start``
    made; None: a new one on this machine, unless ``RAY_ADDRESS`` names one). ``workers``
    defaults to the cluster's CPUs: more machines joining it (``ray start --address``) run
    more clients at once with no change here. Every node needs Accord and the client_fn's code
    importable (or a ``runtime_env`` in ``init``). Ray pickles what it moves: run it on a
    network you trust, as Ray's own docs say."""

    #: a Ray task costs milliseconds to schedule: larger batches amortize it
    max_batch = 64

    def __init__(self, address: str | None = None, workers: int | None = None, **init: Any) -> None:
        try:
            import ray
        except ImportError as exc:
            raise AccordError("the Ray backend needs Ray installed", "pip install 'accord[ray]'") from exc
        self._ray = ray
        self._started = not ray.is_initialized()
        if self._started and address not in (None, "auto", "local") and "://" not in address:
            _check_reachable(address)
        if self._started:
            init.setdefault("include_dashboard", False)
            init.setdefault("log_to_driver", True)
            try:
                ray.init(address=address, **init)
            except ConnectionError as exc:
                raise AccordError(
                    f"cannot reach a Ray cluster at {address!r}: {exc}",
                    "start one (ray start --head) or pass another address",
                ) from exc
        self.workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        self._task = ray.remote(num_cpus=1, max_retries=0)(run_clients)

    def share(self, value: Any) -> Any:
        return self._ray.put(value)

    def run(self, client_fn: Any, setup: Any, job: ClientJob, model: Any, cids: Sequence[str]) -> Future[list[ClientRun]]:
        return self._task.remote(client_fn, setup, job, model, list(cids)).future()

    def close(self, wait: bool = True) -> None:
        if self._started:
            self._ray.shutdown()


def _check_reachable(address: str) -> None:
    """AccordError unless something listens at ``host:port`` (Ray itself waits minutes)."""
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except (OSError, ValueError) as exc:
        raise AccordError(
            f"no Ray cluster answers at {address!r} ({exc})",
            "start one there (ray start --head --port=PORT) or pass another Ray address",
        ) from None


def make_backend(name: str, workers: int | None = None, address: str | None = None, **init: Any) -> Backend:
    """The backend called ``name`` (one of BACKENDS)."""
    if workers is not None and workers < 1:
        raise AccordError(f"workers is {workers}; it must be at least 1", "pass workers=None for one per core")
    if name == "threads":
        if address is not None:
            raise AccordError("a Ray address was given for the threads backend", "pass backend='ray' with it")
        return ThreadBackend(workers)
    if name == "ray":
        return RayBackend(address, workers, **init)
    raise AccordError(f"unknown simulation backend {name!r}", f"use one of {', '.join(BACKENDS)}")
