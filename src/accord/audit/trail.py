"""The aggregator's audit trail, ``logs/audit.jsonl``: a chain (chain.py) of the federation's
start (plan hash, workspace hash, the aggregator's certificate), each restart, each accepted
result (round, collaborator, its certificate's serial, task, the digest of the update as it
arrived, sample count) and each round's global model digest, sealed with the aggregator's key
at each round's close and after the ``stop`` entry of a clean shutdown (docs/audit.md).

O(1) per result: one entry appended, one set lookup to leave out a result the journal replays
after a restart that the chain already holds (one the chain lacks, because the kill came
between the journal's record and the trail's, is appended marked ``replay``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509

from accord.audit.chain import ChainWriter
from accord.messages import TaskResult

#: where the aggregator's trail lives, under its workspace
TRAIL_PATH = "logs/audit.jsonl"


def identity(certificate_pem: bytes, plan_hash: str, workspace_hash: str) -> dict[str, Any]:
    """The fields of a start or restart entry: what signs the chain, and the federation it serves."""
    cert = x509.load_pem_x509_certificate(certificate_pem)
    return {
        "certificate": certificate_pem.decode("ascii"),
        "serial": format(cert.serial_number, "x"),
        "plan_hash": plan_hash,
        "workspace_hash": workspace_hash,
    }


class AuditTrail:
    """The aggregator's chain at ``path``, signed by ``sign`` (its key) under ``certificate_pem``.

    Not thread-safe: the runtime calls it under its lock.
    """

    def __init__(self, path: Path, sign: Callable[[bytes], bytes], certificate_pem: bytes) -> None:
        self._chain = ChainWriter(path, sign)
        self._certificate = certificate_pem
        #: round -> the (kind, ...) keys of its result and model entries: the last two rounds only
        self._seen: dict[int, set[tuple[Any, ...]]] = {}
        self._began = False

    @property
    def path(self) -> Path:
        return self._chain.path

    def begin(self, resumed: bool, plan_hash: str, workspace_hash: str) -> None:
        """A ``start`` entry (a new federation) or, when the saved one is ``resumed``, a ``restart``."""
        before = self._chain.take_entries_before()  # dropped once read: O(1) memory after a restart
        if resumed:
            for entry in before:
                if entry.get("kind") in ("result", "model"):
                    self._saw(entry["round"], _key(entry))
        del before
        kind = "restart" if resumed else "start"
        self._chain.append(kind, role="aggregator", **identity(self._certificate, plan_hash, workspace_hash))
        self._began = True

    def result(self, result: TaskResult, replay: bool = False) -> None:
        """An accepted result; a ``replay`` already in the chain is left out."""
        entry = {
            "round": result.round_number,
            "collaborator": result.collaborator,
            "serial": result.sender_serial,
            "task": result.task,
            "update_digest": result.update_digest,
            "sample_count": result.sample_count,
        }
        key = _key({"kind": "result", **entry})
        if replay and key in self._seen.get(result.round_number, ()):
            return
        self._chain.append("result", **entry, **({"replay": True} if replay else {}))
        self._saw(result.round_number, key)

    def model(self, round_number: int, digest: str) -> None:
        """The global model of ``round_number`` (its tensors/digest.py digest), once per digest."""
        for old in [r for r in self._seen if r < round_number - 1]:
            del self._seen[old]
        key = ("model", digest)
        if not digest or key in self._seen.get(round_number, ()):
            return
        self._chain.append("model", round=round_number, digest=digest)
        self._saw(round_number, key)

    def seal(self) -> None:
        """Sign the chain's head (at a round's close)."""
        self._chain.seal()

    def close(self, finished: bool = False) -> None:
        """A sealed ``stop`` entry when it began (a clean shutdown; ``finished``: every round ran,
        else stopped early or after a failed round), then close."""
        try:
            if self._began:
                self._chain.stop(finished=finished)
            else:
                self._chain.seal()
        finally:
            self._chain.close()

    def _saw(self, round_number: int, key: tuple[Any, ...]) -> None:
        self._seen.setdefault(round_number, set()).add(key)


def _key(entry: dict[str, Any]) -> tuple[Any, ...]:
    if entry["kind"] == "model":
        return ("model", entry["digest"])
    return ("result", entry["collaborator"], entry["task"], entry["update_digest"])
