"""Metric records and the JSON-lines file that holds them (logs/metrics.jsonl at the aggregator,
logs/collaborator-NAME-metrics.jsonl at a site): one object per line."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

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
        text = "".join(json.dumps(record.as_dict()) + "\n" for record in records)
        with self.path.open("a", encoding="utf-8") as out:
            out.write(text)


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
