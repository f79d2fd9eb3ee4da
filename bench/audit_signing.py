"""Why the audit trail signs a seal per round, not each result: the cost of a signature against
what the aggregator already spends on each accepted result.

Measured in the same run, per operation, min and median over the repeats:

- baseline: the journal's record of a result (a ~220-byte line appended, then fsync), which
  every accepted result already costs (aggregator/journal.py);
- the audit entry of a result (``ChainWriter.append``: canonical JSON, SHA-256 of the previous
  entry, one write; no fsync);
- the update digest of a 1 MiB update as its chunks arrive (``UpdateDigest``: BLAKE3), and
  the hashes it could use over the same MiB: SHA-256 (the digest's algorithm before
  ``accord-update-v2``; with the CPU's SHA instructions where it has them), BLAKE2b, BLAKE3;
- a seal's signature with the aggregator's key: ECDSA P-256 (the default key), ECDSA P-384 (the
  default before it, ``--key-type ec-p384``) and RSA-3072; each ECDSA one over SHA-384, as
  pki/signatures.py signs.

    .venv/bin/python bench/audit_signing.py [--repeats 5] [--count 200]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def per_op(action: Callable[[int], None], count: int) -> float:
    """Seconds per call of ``action`` over ``count`` calls."""
    started = time.perf_counter()
    for i in range(count):
        action(i)
    return (time.perf_counter() - started) / count


def main() -> None:
    from blake3 import blake3

    from accord.audit.chain import ChainWriter
    from accord.pki.keys import generate_private_key
    from accord.pki.signatures import signer_for
    from accord.tensors.digest import UpdateDigest

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--count", type=int, default=200)
    args = parser.parse_args()
    p256, p384, rsa = (signer_for(generate_private_key(kind)) for kind in ("ec", "ec-p384", "rsa"))
    update = os.urandom(1 << 20)
    seal = b'{"at":1764600000.0,"kind":"seal","prev":"' + b"ab" * 32 + b'","seq":1234}'
    figures: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        chain = ChainWriter(Path(folder) / "audit.jsonl", p256)
        fd = os.open(Path(folder) / "journal.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        record = b'{"kind":"result","collaborator":"site17","task":"train","sample_count":180,' + b"x" * 140 + b"}\n"

        def journal(_: int) -> None:
            os.write(fd, record)
            os.fsync(fd)

        def entry(i: int) -> None:
            chain.append("result", round=3, collaborator=f"site{i}", serial="5f" * 10, task="train", update_digest="cd" * 32, sample_count=180)

        def digest(_: int) -> None:
            d = UpdateDigest()
            d.add("w", "float32", (262144,), 0, "", update)
            d.hexdigest()

        cases = {
            "journal record + fsync (baseline)": journal,
            "audit entry of a result": entry,
            "update digest, 1 MiB": digest,
            "SHA-256 of 1 MiB": lambda _: hashlib.sha256(update).digest(),
            "BLAKE2b-256 of 1 MiB": lambda _: hashlib.blake2b(update, digest_size=32).digest(),
            "BLAKE3-256 of 1 MiB": lambda _: blake3(update).digest(),
            "ECDSA P-256 signature (default)": lambda _: p256(seal),
            "ECDSA P-384 signature": lambda _: p384(seal),
            "RSA-3072 signature": lambda _: rsa(seal),
        }
        for _ in range(args.repeats):
            for name, action in cases.items():
                figures.setdefault(name, []).append(per_op(action, args.count))
        chain.close()
        os.close(fd)
    base = statistics.median(figures["journal record + fsync (baseline)"])
    print(f"per operation, {args.repeats} repeats of {args.count}; ratio = median / the baseline's median")
    print(f"{'operation':38} {'min µs':>10} {'median µs':>10} {'ratio':>8}")
    for name, values in figures.items():
        print(f"{name:38} {min(values) * 1e6:10.1f} {statistics.median(values) * 1e6:10.1f} {statistics.median(values) / base:8.2f}")
    entry_median = statistics.median(figures["audit entry of a result"])
    for name in ("ECDSA P-256 signature (default)", "ECDSA P-384 signature", "RSA-3072 signature"):
        print(f"{name} / audit entry: {statistics.median(figures[name]) / entry_median:.1f}x")
    for name in ("SHA-256 of 1 MiB", "BLAKE2b-256 of 1 MiB", "BLAKE3-256 of 1 MiB"):
        print(f"{name}: {(1 << 20) / statistics.median(figures[name]) / 1e9:.2f} GB/s")


if __name__ == "__main__":
    main()
