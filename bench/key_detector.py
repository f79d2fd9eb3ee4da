"""What the private-key detector costs per file, as a ratio to a plain substring search.

Import and export run it on every file of a workspace; the baseline is the substring search
for a PEM marker over the same bytes, measured in the same run.

    .venv/bin/python bench/key_detector.py [--mib 64] [--repeat 3]
"""

from __future__ import annotations

import argparse
import base64
import statistics
import time
from collections.abc import Callable

import numpy as np

from accord.pki.secrets import private_key_problem


def timed(call: Callable[[], object], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    size = args.mib << 20
    rng = np.random.default_rng(0)
    cases = {
        "random bytes": rng.bytes(size),
        "base64 text": base64.b64encode(rng.bytes(size * 3 // 4)),
        "python source": b"def f(x):\n    return x + 1  # comment\n" * (size // 38),
        "zeros": bytes(size),
        "DER-like headers": b"\x30\x10\x02\x01\x00\x30" * (size // 6),
    }
    print(f"{args.mib} MiB per case, {args.repeat} runs; seconds min/median, and min as a multiple of the baseline")
    for name, data in cases.items():
        scan = timed(lambda data=data: private_key_problem(data), args.repeat)
        base = timed(lambda data=data: b"PRIVATE KEY-----" in data, args.repeat)
        ratio = min(scan) / max(min(base), 1e-9)
        print(f"  {name:18s} {min(scan):6.2f} / {statistics.median(scan):6.2f} s   x{ratio:,.0f} the substring search")


if __name__ == "__main__":
    main()
