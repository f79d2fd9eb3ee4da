"""Metric records and the JSON-lines file that holds them (logs/metrics.jsonl at the aggregator,
logs/collaborator-NAME-metrics.jsonl at a site): one object per line."""

from __future__ import annotations

import json
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import overload

from accord.errors import AccordError
from accord.files import atomic_write


@dataclass(frozen=True)
class MetricRecord:
    """One value: round, origin (collaborator or ``aggregator``), task, metric name, value."""

    round: int
    origin: str
    task: str
    metric: str
    value: float

    def as_dict(self) -> dict[str, object]:
        """The record as metrics.jsonl holds it (``asdict`` without its deep copy: 10x faster)."""
        return {"round": self.round, "origin": self.origin, "task": self.task, "metric": self.metric, "value": self.value}


class RoundRecords(Sequence[MetricRecord]):
    """One round's records as columns: per record its origin (the site's name, shared with the
    round's other state), an index into the round's few (task, metric) pairs and its value in a
    float64 array: about 20 bytes a record, not a record object, its float and dict (~100);
    each ``MetricRecord`` is made when read."""

    def __init__(self, round_number: int) -> None:
        self.round_number = round_number
        self._origins: list[str] = []
        self._keys: list[tuple[str, str]] = []
        self._key_index: dict[tuple[str, str], int] = {}
        self._which = array("I")
        self._values = array("d")

    def add(self, origin: str, task: str, metric: str, value: float) -> None:
        """Append one record."""
        key = (task, metric)
        index = self._key_index.get(key)
        if index is None:
            index = self._key_index[key] = len(self._keys)
            self._keys.append(key)
        self._origins.append(origin)
        self._which.append(index)
        self._values.append(value)

    def extended(self, records: Iterable[MetricRecord]) -> RoundRecords:
        """A copy with ``records`` (of this round) appended: the columns copied, no record made."""
        copy = RoundRecords(self.round_number)
        copy._origins, copy._keys, copy._key_index = list(self._origins), list(self._keys), dict(self._key_index)
        copy._which, copy._values = array("I", self._which), array("d", self._values)
        for record in records:
            if record.round != self.round_number:
                raise ValueError(f"a record of round {record.round} added to round {self.round_number}'s")
            copy.add(record.origin, record.task, record.metric, record.value)
        return copy

    def __len__(self) -> int:
        return len(self._values)

    @overload
    def __getitem__(self, index: int) -> MetricRecord: ...
    @overload
    def __getitem__(self, index: slice) -> list[MetricRecord]: ...
    def __getitem__(self, index: int | slice) -> MetricRecord | list[MetricRecord]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("record index out of range")
        task, metric = self._keys[self._which[index]]
        return MetricRecord(self.round_number, self._origins[index], task, metric, self._values[index])

    def __iter__(self) -> Iterator[MetricRecord]:
        return (self[i] for i in range(len(self)))


#: records a MetricsLog joins into one write
_WRITE_BLOCK = 4096


class MetricsLog:
    """Appends records to a JSON-lines file (one object per line)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def keep_before(self, round_number: int) -> None:
        """Drop the records of rounds from ``round_number`` on (they will be written again)."""
        kept = [r for r in read_metrics(self.path) if r.round < round_number]
        atomic_write(self.path, "".join(json.dumps(r.as_dict()) + "\n" for r in kept).encode("utf-8"))

    def write(self, records: Iterable[MetricRecord]) -> None:
        """Append ``records``, ``_WRITE_BLOCK`` lines at a time (a round of 10,000 sites' records
        is never one text in memory)."""
        lines = (json.dumps(record.as_dict()) + "\n" for record in records)
        with self.path.open("a", encoding="utf-8") as out:
            while block := "".join(islice(lines, _WRITE_BLOCK)):
                out.write(block)


def read_metrics(path: Path) -> list[MetricRecord]:
    """Read a metrics.jsonl file back; a last line cut short (a killed writer) is left out."""
    if not path.is_file():
        return []
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(MetricRecord(**json.loads(line)))
        except (ValueError, TypeError):
            if number < len(lines):
                raise AccordError(f"{path}, line {number}, is not a metric record", "remove or repair that line") from None
    return records


#: what gets a closed round's records after metrics.jsonl (the plan's sinks: aggregator/sinks/)
RecordSink = Callable[[Sequence[MetricRecord]], None]
