"""The open round's phase checkpoint: where a restarted aggregator resumes a multi-phase round
(RoundPhases.checkpoint; secure aggregation's from ``unmask`` on), one file beside the journal.

``phases.bin``, 0600, written atomically before the phase's first assignment is served: a
4-byte length, a JSON header (round, model digest, phase index and name, members, and the
round's tally: aggregator/round_tally.py, what its earlier phases took besides the updates:
metrics, records, failures) and the phases' own bytes. It binds the round and its global
model, so a stale one (an earlier round, another model) is ignored; a fresh start removes it.
Only the aggregator reads it: it is parsed strictly and never unpickled. A checkpoint without
a tally (an earlier Accord's) resumes with none.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

from accord.aggregator.events import PhaseOpened
from accord.aggregator.open_round import OpenRound
from accord.aggregator.round_tally import RoundTally
from accord.errors import RefusedError
from accord.files import atomic_write
from accord.strategies.base import Strategy

NAME = "phases.bin"


@dataclass(frozen=True)
class PhaseCheckpoint:
    """Phase ``phase`` (index ``index``) of round ``round_number`` of the model ``model_digest``
    opened with ``members``; ``state`` is the round's phases' (RoundPhases.resume), ``tally``
    what the round took by then besides its updates (restored into the resumed round)."""

    round_number: int
    model_digest: str
    index: int
    phase: str
    members: tuple[str, ...]
    state: bytes
    tally: RoundTally = field(default_factory=RoundTally)

    def to_bytes(self) -> bytes:
        header = json.dumps(
            {
                "round": self.round_number,
                "digest": self.model_digest,
                "index": self.index,
                "phase": self.phase,
                "members": list(self.members),
                "tally": self.tally.to_json(),
            },
            allow_nan=False,
        ).encode("utf-8")
        return struct.pack(">I", len(header)) + header + self.state


def checkpoint_of(current: OpenRound, state: bytes) -> PhaseCheckpoint:
    """The checkpoint of ``current``'s open phase: its phases' ``state`` and the round's tally."""
    tally = RoundTally.of(current)
    return PhaseCheckpoint(current.number, current.model_digest, current.phase_index, current.phase, current.members, state, tally)


def save(directory: Path, checkpoint: PhaseCheckpoint) -> None:
    """Write ``checkpoint`` (flushed, 0600) in ``directory``."""
    atomic_write(Path(directory) / NAME, checkpoint.to_bytes(), mode=0o600)


def load(directory: Path) -> PhaseCheckpoint | None:
    """The checkpoint saved in ``directory``; None if there is none or it is malformed."""
    try:
        data = (Path(directory) / NAME).read_bytes()
        (size,) = struct.unpack(">I", data[:4])
        header = json.loads(data[4 : 4 + size])
        members = tuple(str(name) for name in header["members"])
        tally = RoundTally.from_json(header["tally"]) if "tally" in header else RoundTally()
        return PhaseCheckpoint(
            int(header["round"]), str(header["digest"]), int(header["index"]), str(header["phase"]), members, data[4 + size :], tally
        )
    except (OSError, ValueError, KeyError, TypeError, RecursionError, struct.error):  # RecursionError: JSON nested too deep
        return None


def remove(directory: Path) -> None:
    """Forget the checkpoint in ``directory`` (a fresh start)."""
    (Path(directory) / NAME).unlink(missing_ok=True)


def resume_phase(current: OpenRound, saved: PhaseCheckpoint, strategy: Strategy, now: float) -> PhaseOpened | None:
    """Open ``current``'s phase that ``saved`` names, its phases resumed from it and its tally
    restored (the members who missed an earlier phase, and did not fail, are its stragglers);
    None when it is not this round's, or does not fit: ``current`` then has fresh phases
    (``strategy``'s), to run from the first."""
    phases = current.phases
    if phases is None or (saved.round_number, saved.model_digest) != (current.number, current.model_digest):
        return None
    fits = 0 <= saved.index < len(phases.names) and phases.names[saved.index] == saved.phase
    if not fits or not (set(saved.members) | saved.tally.names()) <= set(current.assigned):
        return None
    try:
        phases.resume(saved.phase, saved.state)
        opened = current.begin_phase(saved.index, saved.members, now)
    except RefusedError:
        current.phases = strategy.phased(current.context)
        return None
    saved.tally.restore(current)
    current.dropped.update(set(current.assigned) - set(saved.members) - set(current.failed))
    return opened
