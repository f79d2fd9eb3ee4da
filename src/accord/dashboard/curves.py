"""The metric curves of logs/metrics.jsonl, read as the file grows: each poll parses only the
bytes appended since the last one (the whole file again only when the aggregator rewrote it,
on a resume), READ_BLOCK bytes at a time. At most MAX_KEYS metrics are sent (the aggregated
ones first, by name), with a count of the rest: sites may add metric names every round."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, BinaryIO

#: per metric, the curves of at most this many sites are sent (the first by name), with the total
MAX_SITE_CURVES = 16
#: at most this many metrics (``task/metric``) are sent; the rest are counted
MAX_KEYS = 200
#: the file is read this many bytes at a time
READ_BLOCK = 1 << 20
#: a line longer than this is no metric record: it is skipped
MAX_LINE_BYTES = 64 << 10

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
                self._read(file)
        except FileNotFoundError:
            self._file, self._offset, self.aggregated, self.sites = None, 0, {}, {}

    def _read(self, file: BinaryIO) -> None:
        """Take the whole lines from the offset on, a block at a time; a last line without its
        newline is still being written (left for the next call), unless it is too long to be a record."""
        pending = b""
        while block := file.read(READ_BLOCK):
            data = pending + block
            end = data.rfind(b"\n") + 1
            for line in data[:end].splitlines():
                self._take(line)
            self._offset += end
            pending = data[end:]
            if len(pending) > MAX_LINE_BYTES:  # skipped; its tail, up to its newline, is no JSON either
                self._offset += len(pending)
                pending = b""

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
        MAX_SITE_CURVES sites), ``total``: how many sites have that metric}; at most MAX_KEYS
        keys in all (the aggregated first, by name), ``left_out``: how many more there are."""
        others = sorted(set(self.sites) - set(self.aggregated))
        keys = (sorted(self.aggregated) + others)[:MAX_KEYS]
        sites = {}
        for key in keys:
            by_site = self.sites.get(key)
            if by_site:
                shown = sorted(by_site)[:MAX_SITE_CURVES]
                sites[key] = {"curves": {name: _points(by_site[name]) for name in shown}, "total": len(by_site)}
        aggregated = {key: _points(self.aggregated[key]) for key in keys if key in self.aggregated}
        return {"aggregated": aggregated, "sites": sites, "left_out": len(self.aggregated) + len(others) - len(keys)}


def _points(by_round: dict[int, float]) -> Curve:
    return sorted(by_round.items())
