"""The aggregator tests/test_fuzz_service.py fuzzes, run as its own process, set up as ``fx aggregator start`` sets up its own.

    python tests/fuzz_aggregator.py WORKSPACE CERT_DIR NAME...

Its malloc arenas are capped and glibc's thresholds set before any thread starts
(aggregator/memory.py), so its resident memory follows what it holds, and is its own: not the
fuzzing client's, nor what earlier tests left in a pytest process (the arenas of their threads,
which a later cap does not remove, or thresholds another test set first: the first call wins).

The real AggregatorRuntime of WORKSPACE serves behind a real GrpcAggregatorServer on
127.0.0.1 (its certificate from CERT_DIR). It prints one JSON line, ``{"port", "workspace_hash"}``,
then answers each command read from stdin with one JSON line, until ``stop``:

- ``rss``: resident bytes, once free heap memory is handed back (glibc keeps freed blocks);
- ``state``: the round number, each NAME's assignment (its repr) and the refusals the server reported;
- ``slots``: whether every upload slot can be taken (none stayed taken), then frees them;
- ``moved``: the tensors that differ from the initial model (rtol 1e-6).

Warnings (one a refusal) are not logged; errors go to stderr.
"""

from __future__ import annotations

import ctypes
import gc
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from accord.aggregator.memory import limit_malloc_arenas
from accord.aggregator.runtime import AggregatorRuntime
from accord.pki.layout import CertLayout
from accord.plan.loader import load_plan
from accord.transport.grpc_server import GrpcAggregatorServer
from accord.transport.tls import ServerTLS
from accord.transport.wire import MIB


def rss() -> int:
    """Resident bytes, once free heap memory is handed back (glibc keeps freed blocks)."""
    gc.collect()
    getattr(ctypes.CDLL(None), "malloc_trim", lambda pad: 0)(0)
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def answer(value: Any) -> None:
    print(json.dumps(value), flush=True)


def main(workspace: str, cert_dir: str, names: list[str]) -> None:
    limit_malloc_arenas(MIB)  # first: before any thread, as `fx aggregator start` does
    logging.getLogger("accord").setLevel(logging.ERROR)  # a warning per refusal
    logging.getLogger("grpc._common").setLevel(logging.CRITICAL)  # a traceback per undecodable body
    plan = load_plan(Path(workspace) / "plan" / "plan.yaml", workspace=Path(workspace))
    runtime = AggregatorRuntime(plan)
    initial = {name: value.copy() for name, value in runtime.engine.model.items()}
    layout = CertLayout(cert_dir)
    tls = ServerTLS(layout.aggregator_cert("localhost"), layout.aggregator_key("localhost"), layout.chain)
    refusals: list[None] = []  # one entry per refusal the server reports
    server = GrpcAggregatorServer(
        runtime, "127.0.0.1", 0, tls, long_poll_seconds=1.0, on_refusal=lambda _: refusals.append(None)
    )

    def slots_free() -> bool:
        slots = runtime.settings.max_concurrent_uploads
        taken = [runtime._uploads.acquire(timeout=60) for _ in range(slots)]
        for ok in taken:
            if ok:
                runtime._uploads.release()
        return all(taken)

    commands = {
        "rss": rss,
        "state": lambda: {
            "round": runtime.engine.round_number,
            "owed": {name: repr(runtime.engine.assignment(name)) for name in names},
            "refusals": len(refusals),
        },
        "slots": slots_free,
        "moved": lambda: [
            name for name, value in runtime.engine.model.items() if not np.allclose(value, initial[name], rtol=1e-6, atol=0)
        ],
    }
    try:
        answer({"port": server.start(), "workspace_hash": runtime.workspace_hash})
        for line in sys.stdin:
            if line.strip() == "stop":
                break
            answer(commands[line.strip()]())
    finally:
        server.stop(0)
        runtime.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
