"""The metric curves of logs/metrics.jsonl, read as the file grows: each poll parses only the
bytes appended since the last one (the whole file again only when the aggregator rewrote it,
on a resume)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

#: per metric, the curves of at most this many sites are sent (the first by name), with the total
MAX_SITE_CURVES = 16

Curve = list[tuple[int, float]]


class MetricCurves:
    """Per ``task/metric``: the aggregator's curve and each site's, as (round, value) points."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: tuple[int, int] | None = None  # (device, inode) of the file read
        self._offset = 0
        self.aggregated: dict[str, dict[int, float]] = {}
        self.sites: dict[str, dict[str, dict[int, float]]] = {}

    def refresh(self) -> None:
        """Read what was appended since the last call (all of it if the file was replaced or cut)."""
        try:
            with self.path.open("rb") as file:
                stat = os.fstat(file.fileno())
                identity = (stat.st_dev, stat.st_ino)
                if identity != self._file or stat.st_size < self._offset:
                    self._file, self._offset = identity, 0
                    self.aggregated, self.sites = {}, {}
                file.seek(self._offset)
                data = file.read(max(stat.st_size - self._offset, 0))
        except FileNotFoundError:
            self._file, self._offset, self.aggregated, self.sites = None, 0, {}, {}
            return
        end = data.rfind(b"\n") + 1  # a last line without its newline is still being written
        self._offset += end
        for line in data[:end].splitlines():
            self._take(line)

    def _take(self, line: bytes) -> None:
        try:
            record = json.loads(line)
            round_number, origin = int(record["round"]), str(record["origin"])
            key, value = f"{record['task']}/{record['metric']}", float(record["value"])
        except (ValueError, TypeError, KeyError):
            return
        if not math.isfinite(value):
            return
        if origin == "aggregator":
            self.aggregated.setdefault(key, {})[round_number] = value
        else:
            self.sites.setdefault(key, {}).setdefault(origin, {})[round_number] = value

    def as_json(self) -> dict[str, Any]:
        """``aggregated``: key -> points; ``sites``: key -> {``curves``: site -> points (at most
        MAX_SITE_CURVES sites), ``total``: how many sites have that metric}."""
        sites = {}
        for key, by_site in self.sites.items():
            shown = sorted(by_site)[:MAX_SITE_CURVES]
            sites[key] = {"curves": {name: _points(by_site[name]) for name in shown}, "total": len(by_site)}
        return {"aggregated": {key: _points(points) for key, points in self.aggregated.items()}, "sites": sites}


def _points(by_round: dict[int, float]) -> Curve:
    return sorted(by_round.items())
