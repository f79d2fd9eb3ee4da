"""What showing a site's transfers costs: receiving a model through the wire codec in 1 MiB
chunks (the work every site already does per chunk: the baseline), then the same with each
chunk counted (collaborator/transfers.py, no bar: a log or CI), then counted with a rich
progress bar advanced per chunk (what a terminal gets), interleaved, in the same run.

    .venv/bin/python bench/site_transfers.py [--size-mib 256] [--repeat 7]

Prints min and median of each and their ratios to the baseline (each variant runs first in
turn: the first after the others' buffers were freed pays more page faults).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import time
from collections.abc import Callable

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    from accord.collaborator.transfers import Transfers
    from accord.tensors.codec import TensorAssembler, iter_tensor_chunks
    from accord.tensors.state import tensor_specs

    total = args.size_mib * 1024 * 1024
    rng = np.random.default_rng(0)
    model = {f"layer{i}.weight": rng.standard_normal(total // 32, dtype=np.float32) for i in range(8)}
    specs = tensor_specs(model)

    def receive(counted: Callable[[str, int], None] | None) -> None:
        assembler = TensorAssembler(specs, max_total_bytes=total)
        for name, dtype, shape, offset, data in iter_tensor_chunks(model, 1024 * 1024):
            assembler.add(name, dtype, shape, offset, data)
            if counted is not None:
                counted("download", memoryview(data).nbytes)
        assembler.finish()

    def counted_only() -> None:
        transfers = Transfers(tty=False, large_bytes=2 * total)  # below its line's threshold: counting alone
        with transfers.shown("model", total):
            receive(transfers)

    def with_bar() -> None:
        transfers = Transfers(tty=True, bar_bytes=1)
        with contextlib.redirect_stdout(io.StringIO()), transfers.shown("model", total):
            receive(transfers)

    variants: dict[str, Callable[[], None]] = {"codec only": lambda: receive(None), "counted": counted_only, "counted + bar": with_bar}
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for turn in range(args.repeat):
        for name in names[turn % 3 :] + names[: turn % 3]:  # interleaved, each first in turn: a loaded machine slows all alike
            started = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - started)
    base = times["codec only"]
    for name, taken in times.items():
        print(
            f"{args.size_mib} MiB, {name:14s} min {1000 * min(taken):7.1f} ms  median {1000 * statistics.median(taken):7.1f} ms  "
            f"ratio to codec only {min(taken) / min(base):.3f} (min) {statistics.median(taken) / statistics.median(base):.3f} (median)"
        )


if __name__ == "__main__":
    main()
