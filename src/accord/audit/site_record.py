"""A site's own audit record, ``logs/audit-NAME.jsonl`` in its workspace: a chain (chain.py)
of its start (plan hash, workspace hash, its certificate), each global model it received
(round, digest, plan hash) and each result the aggregator acknowledged (round, task, the
digest of the chunks it sent, sample count), sealed with the site's own key after each result
and after the ``stop`` entry of a clean shutdown; locked while the site runs. ``fx audit verify --site`` cross-checks it against the aggregator's chain."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from accord.audit.chain import ChainInUse, ChainWriter
from accord.audit.trail import identity
from accord.messages import TaskResult
from accord.tensors.compression import Encoded
from accord.tensors.digest import require_update_digest


def record_path(name: str) -> str:
    """Where site ``name`` keeps its record, under its workspace."""
    return f"logs/audit-{name}.jsonl"


class SiteRecord:
    """Site ``name``'s chain at ``path``, signed by ``sign`` (its key) under ``certificate_pem``;
    ``chunk_bytes`` is the plan's, by which its results are cut into the chunks hashed."""

    def __init__(
        self,
        path: Path,
        sign: Callable[[bytes], bytes],
        name: str,
        certificate_pem: bytes,
        plan_hash: str,
        workspace_hash: str,
        chunk_bytes: int,
    ) -> None:
        require_update_digest()  # each acknowledged result is hashed: refused as the site starts, before its record
        try:
            self._chain = ChainWriter(path, sign)
        except ChainInUse:
            raise ChainInUse(
                f"site {name} is already running from this workspace (its audit record {path} is held by another process)",
                f"stop the other `fx collaborator start -n {name}` first; a site runs once, from one workspace",
            ) from None
        self._plan_hash, self._chunk_bytes = plan_hash, chunk_bytes
        kind = "restart" if self._chain.resumed else "start"
        self._chain.take_entries_before()  # not needed: dropped
        self._chain.append(kind, site=name, **identity(certificate_pem, plan_hash, workspace_hash))
        self._received: tuple[int, str] | None = None

    def received(self, round_number: int, digest: str) -> None:
        """The global model of ``round_number`` arrived, with this digest (tensors/digest.py)."""
        if self._received == (round_number, digest):
            return
        self._chain.append("received", round=round_number, digest=digest, plan_hash=self._plan_hash)
        self._received = (round_number, digest)

    def sent(self, result: TaskResult, encoded: Encoded | None) -> None:
        """``result`` (as ``encoded``, or raw) was acknowledged: recorded and sealed; the seal is
        flushed to disk on a thread while the site runs its next task (the fsync waited for a
        disk shared with the aggregator's writes: ~7 ms of each site's round with 8 sites)."""
        from accord.transport.wire import sent_update_digest

        digest = sent_update_digest(result.tensors or {}, self._chunk_bytes, encoded)
        self._chain.append(
            "sent", round=result.round_number, task=result.task, update_digest=digest, sample_count=result.sample_count
        )
        self._chain.seal(wait=False)

    def close(self) -> None:
        """A sealed ``stop`` entry (a clean shutdown), then close (and release the record's lock)."""
        try:
            self._chain.stop()
        finally:
            self._chain.close()
