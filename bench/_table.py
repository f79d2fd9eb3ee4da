"""The benches' tables: fixed-width columns printed row by row, and the min/median/ratio table.

A bench script imports this as ``from _table import ...`` (its own folder is on ``sys.path``).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    """One column: its header, its width (at least the header's) and the format of its floats."""

    header: str
    width: int = 0
    number: str = ".4f"


class Table:
    """Prints its header when made and each row as it comes (a slow bench shows progress).

    The first column is left-aligned, the others right-aligned; a float is formatted with its
    column's ``number`` spec, anything else with ``str``. The last cell may overflow its width.
    """

    def __init__(self, *columns: Column) -> None:
        self.columns = columns
        self.widths = [max(c.width, len(c.header)) for c in columns]
        self._print([c.header for c in columns])

    def row(self, *cells: object) -> None:
        """Print one row (as many cells as columns, or fewer)."""
        self._print([format(c, col.number) if isinstance(c, float) else str(c) for c, col in zip(cells, self.columns)])

    def _print(self, cells: Sequence[str]) -> None:
        parts = [cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(cells, self.widths))]
        print("  ".join(parts).rstrip())


def min_median_table(label: Column, unit: str, figures: Mapping[object, Sequence[float]], baseline: object) -> None:
    """One row per entry of ``figures`` (a label and its repeats): min and median in ``unit``,
    and the median as a ratio to the median of ``baseline``'s row, measured in the same run."""
    base = statistics.median(figures[baseline])
    table = Table(label, Column(f"min {unit}", 8, ".2f"), Column(f"median {unit}", 10, ".2f"), Column("x baseline", 10, ".2f"))
    for name, runs in figures.items():
        median = statistics.median(runs)
        table.row(name, min(runs), median, median / base)
