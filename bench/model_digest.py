"""What the model digest costs: hashing a round's global model (once per round at the
aggregator, once per received model at a site) as a ratio of receiving that model through
the wire codec (the copy every site already pays), measured in the same run.

    .venv/bin/python bench/model_digest.py [--sizes-mib 1 16 128] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def timed(call, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mib", type=int, nargs="+", default=[1, 16, 128])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from accord.tensors.codec import TensorAssembler, iter_tensor_chunks
    from accord.tensors.digest import model_digest
    from accord.tensors.state import tensor_specs

    rng = np.random.default_rng(0)
    for mib in args.sizes_mib:
        floats = mib * 1024 * 1024 // 4
        model = {f"layer{i}.weight": rng.standard_normal(floats // 8, dtype=np.float32) for i in range(8)}
        specs = tensor_specs(model)

        def receive(specs=specs, mib=mib, model=model) -> None:
            assembler = TensorAssembler(specs, max_total_bytes=mib * 1024 * 1024)
            for name, dtype, shape, offset, data in iter_tensor_chunks(model, 1024 * 1024):
                assembler.add(name, dtype, shape, offset, data)
            assembler.finish()

        codec = timed(receive, args.repeat)
        digest = timed(lambda model=model: model_digest(model, 3), args.repeat)
        print(
            f"{mib:4d} MiB model: digest min {1000 * min(digest):7.1f} ms median {1000 * statistics.median(digest):7.1f} ms; "
            f"codec receive min {1000 * min(codec):7.1f} ms median {1000 * statistics.median(codec):7.1f} ms; "
            f"digest/receive {min(digest) / min(codec):.2f} (min) {statistics.median(digest) / statistics.median(codec):.2f} (median)"
        )


if __name__ == "__main__":
    main()
