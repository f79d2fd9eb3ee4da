"""CSVDataLoader: a site's own CSV file (a header, a label column, numeric features), from the plan alone.

Read with the standard library's ``csv`` module, line by line: the features are parsed into
float64 blocks of ``_BLOCK_ROWS`` rows, so loading peaks at about 16 bytes per feature cell
(the blocks and the array they are joined into) plus one block as Python floats, and the
loader then holds 4 bytes per cell (float32). Each site standardizes with the mean and standard deviation of its own training
split, never its validation split, and applies them to both.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from accord.data.arrays import ArrayDataLoader
from accord.data.settings import check_names, check_seed, check_type, class_index
from accord.data.sharding import split_indices
from accord.errors import AccordError

#: rows parsed into one float64 block before it is stacked
_BLOCK_ROWS = 4096
_FLOAT32_MAX = float(np.finfo(np.float32).max)
#: without ``classes``, a label is a class index below this (the model has one output per class)
MAX_CLASS_INDEX = 10_000
_UTF8_FIX = "save the file as UTF-8 text (e.g. `iconv -f latin1 -t utf-8 in.csv > out.csv`)"


class CSVDataLoader(ArrayDataLoader):
    """The CSV file at ``data_path``: its first row names the columns, every other row is a sample.

    ``label_column``: the column of class labels. ``feature_columns``: the feature columns by
    name, in the order the model takes them (each site's file may order its columns
    differently); ``None``: every other column, in the file's order (then every site's file
    must have the same columns in the same order). Every feature cell must be a finite number
    within float32's range. ``classes``: the class names in index order (the same at every
    site, as the plan is); ``None``: the labels must be class indices 0, 1, ... below
    MAX_CLASS_INDEX themselves. ``standardize``: scale each feature by this site's training
    split's mean and std. ``valid_fraction`` and ``seed``: the
    site's stratified train/validation split. ``delimiter``: one character (``";"``, ``"\\t"``).
    """

    def __init__(
        self,
        data_path: str,
        label_column: str = "label",
        feature_columns: list[str] | None = None,
        classes: list[str | int] | None = None,
        standardize: bool = True,
        valid_fraction: float = 0.2,
        seed: int = 0,
        delimiter: str = ",",
        batch_size: int = 32,
    ) -> None:
        check_type("label_column", label_column, str, "a column name")
        check_type("standardize", standardize, bool, "true or false")
        check_type("valid_fraction", valid_fraction, (int, float), "a number between 0 and 1 (e.g. 0.2)")
        check_seed(seed)
        if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in "\r\n\"":
            raise AccordError(
                f"data_loader.settings.delimiter is {delimiter!r:.20}; it must be one character (not a quote or newline)",
                'set data_loader.settings.delimiter to e.g. "," or ";" or "\\t"',
            )
        self.data_path = str(data_path)
        self.label_column = label_column
        self.classes = None if classes is None else [str(c) for c in classes]
        index = class_index(classes)
        wanted = check_names("feature_columns", feature_columns)
        x, y, self.feature_columns = _read(Path(self.data_path).expanduser(), label_column, wanted, index, delimiter)
        train, valid = split_indices(y, valid_fraction, seed)
        if not len(train) or not len(valid):
            raise AccordError(
                f"data file {self.data_path} has {len(y)} data rows: too few for a training and a validation split",
                "give the site more rows (at least two of a class), or change data_loader.settings.valid_fraction",
            )
        x_train, x_valid = x[train], x[valid]
        del x
        # every cell is within float32's range, so float64 sums and squares cannot overflow
        self.feature_mean = x_train.mean(axis=0) if standardize else np.zeros(x_train.shape[1])
        std = x_train.std(axis=0) if standardize else np.ones(x_train.shape[1])
        self.feature_std = np.where(std > 0, std, 1.0)  # a constant column becomes 0
        for part in (x_train, x_valid):
            part -= self.feature_mean
            part /= self.feature_std
        super().__init__(
            self._float32(x_train, "training"),
            y[train],
            self._float32(x_valid, "validation"),
            y[valid],
            batch_size=batch_size,
            num_classes=None if index is None else len(index),
        )

    def _float32(self, part: np.ndarray, split: str) -> np.ndarray:
        """``part`` (standardized) as float32; a column that leaves float32's range is named."""
        with np.errstate(over="ignore"):  # an overflow is named below
            values = part.astype(np.float32)
        bad = np.flatnonzero(~np.isfinite(values).all(axis=0))
        if len(bad):
            at = int(bad[0])
            raise AccordError(
                f"data file {self.data_path}, column {self.feature_columns[at]!r}: a {split} value standardizes beyond float32's range"
                f" (the training rows' std of the column is {self.feature_std[at]:.3g})",
                "drop the column (data_loader.settings.feature_columns) or rescale it so that its training rows vary",
            )
        return values


def _read(path: Path, label_column: str, wanted: list[str] | None, index: dict[str, int] | None, delimiter: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The file's features (float64, a row per sample), class indices and feature column names."""
    if not path.is_file():
        raise AccordError(
            f"data file {path} does not exist (or is not a file)",
            "set this collaborator's data path in plan/data.yaml to its CSV file",
        )
    reader = csv.reader(_utf8_lines(path), delimiter=delimiter, skipinitialspace=True, strict=True)
    try:
        header = next((row for row in reader if row), None)
        if header is None:
            raise AccordError(f"data file {path} is empty", "give a CSV file whose first row names the columns")
        names = [name.strip() for name in header]
        label_at, feature_at = _columns(path, names, label_column, wanted)
        blocks: list[np.ndarray] = []
        block: list[list[float]] = []
        block_lines: list[int] = []
        labels: list[int] = []
        columns = [names[i] for i in feature_at]
        for row in reader:
            if not row:  # a blank line
                continue
            line = reader.line_num
            if len(row) != len(names):
                raise AccordError(
                    f"data file {path} line {line} has {len(row)} cells but the header names {len(names)} columns",
                    "give every row one cell per column (quote a cell that holds the delimiter)",
                )
            labels.append(_label(row[label_at], index, path, line, label_column))
            try:
                block.append([float(row[i]) for i in feature_at])
            except ValueError:
                raise _not_a_number(row, feature_at, path, line, names) from None
            block_lines.append(line)
            if len(block) == _BLOCK_ROWS:
                blocks.append(_finite(block, block_lines, path, columns))
                block, block_lines = [], []
    except csv.Error as exc:
        if _cr_line_ends(path):
            raise AccordError(
                f"data file {path} ends its lines with a bare carriage return (\\r, old Mac style)",
                "convert the line endings to \\n (e.g. `tr '\\r' '\\n' < in.csv > out.csv`)",
            ) from None
        raise AccordError(f"data file {path} line {reader.line_num} is not valid CSV: {exc}", "fix the line (an unclosed quote?)") from None
    if block:
        blocks.append(_finite(block, block_lines, path, columns))
    if not labels:
        raise AccordError(f"data file {path} has a header but no data rows", "add one row per sample under the header")
    x = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
    del blocks, block
    return x, np.array(labels, dtype=np.int64), columns


def _utf8_lines(path: Path) -> Iterator[str]:
    """The file's lines as text (a UTF-8 byte-order mark dropped); a line that is not UTF-8 is named."""
    with path.open("rb") as stream:
        for number, raw in enumerate(stream, 1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise AccordError(
                    f"data file {path} line {number} is not UTF-8 text (byte {raw[exc.start : exc.start + 1]!r} at column {exc.start + 1})",
                    _UTF8_FIX,
                ) from None
            yield text.removeprefix("\ufeff") if number == 1 else text


def _cr_line_ends(path: Path) -> bool:
    """Whether the file's start holds a carriage return not followed by a newline."""
    with path.open("rb") as stream:
        head = stream.read(1 << 16)
    return b"\r" in head.replace(b"\r\n", b"").rstrip(b"\r")


def _columns(path: Path, names: list[str], label_column: str, wanted: list[str] | None) -> tuple[int, list[int]]:
    """Positions of the label column and of the feature columns, in the order the model takes them."""
    seen: dict[str, int] = {}
    for at, name in enumerate(names):
        if name in seen and name:
            raise AccordError(f"data file {path} names the column {name!r} twice (columns {seen[name] + 1} and {at + 1})", "give every column its own name")
        seen.setdefault(name, at)
    if label_column not in seen:
        raise AccordError(
            f"data file {path} has no label column {label_column!r} (its columns: {_listed(names)})",
            "set data_loader.settings.label_column to the column that holds the labels",
        )
    if wanted is None:
        features = [at for at in range(len(names)) if at != seen[label_column]]
        unnamed = [at + 1 for at in features if not names[at]]
        if unnamed:
            raise AccordError(
                f"data file {path}: column {unnamed[0]} of the header has no name",
                "name it in the header, or list the features in data_loader.settings.feature_columns",
            )
    else:
        if label_column in wanted:
            raise AccordError(
                f"data_loader.settings.feature_columns names the label column {label_column!r}",
                "remove it from feature_columns",
            )
        missing = [name for name in wanted if name not in seen]
        if missing:
            raise AccordError(
                f"data file {path} has no column {missing[0]!r} (data_loader.settings.feature_columns; its columns: {_listed(names)})",
                "fix the name in feature_columns, or add the column to the file",
            )
        features = [seen[name] for name in wanted]
    if not features:
        raise AccordError(f"data file {path} has no feature column besides the label {label_column!r}", "add feature columns to the file")
    return seen[label_column], features


def _label(cell: str, index: dict[str, int] | None, path: Path, line: int, column: str) -> int:
    value = cell.strip()
    if index is not None:
        if value not in index:
            raise AccordError(
                f"data file {path} line {line}: the label {value!r:.40} (column {column!r}) is not one of the plan's classes ({_listed(list(index))})",
                "fix the row, or add the class to data_loader.settings.classes in the federation's plan",
            )
        return index[value]
    if not (value.isascii() and value.isdigit()):
        raise AccordError(
            f"data file {path} line {line}: the label {value!r:.40} (column {column!r}) is not a class index 0, 1, ...",
            "list the class names in data_loader.settings.classes (index = position), so every site numbers them alike",
        )
    digits = value.lstrip("0")
    if len(digits) > len(str(MAX_CLASS_INDEX)) or int(value) >= MAX_CLASS_INDEX:
        raise AccordError(
            f"data file {path} line {line}: the label {value!r:.40} (column {column!r}) is not a class index below {MAX_CLASS_INDEX:,}",
            "list the class names in data_loader.settings.classes (index = position), or fix the row",
        )
    return int(value)


def _not_a_number(row: list[str], feature_at: list[int], path: Path, line: int, names: list[str]) -> AccordError:
    """The error naming the row's first feature cell that ``float`` cannot read."""
    for at in feature_at:
        try:
            float(row[at])
        except ValueError:
            return AccordError(
                f"data file {path} line {line}, column {names[at]!r}: {row[at]!r:.40} is not a number",
                "make every feature cell a number (fill or drop rows with missing values), or leave the column out of data_loader.settings.feature_columns",
            )
    raise AssertionError("no unreadable cell")  # pragma: no cover - called only after float() failed


def _finite(block: list[list[float]], lines: list[int], path: Path, columns: list[str]) -> np.ndarray:
    """A block of rows as float64, every value finite and within float32's range (else the error
    names the first that is not)."""
    values = np.array(block, dtype=np.float64)
    bad = np.argwhere(~(np.abs(values) <= _FLOAT32_MAX))  # NaN compares False
    if len(bad):
        row, column = (int(v) for v in bad[0])
        value = values[row, column]
        if np.isfinite(value):
            raise AccordError(
                f"data file {path} line {lines[row]}, column {columns[column]!r}: {value:.6g} is beyond float32's range (|x| <= 3.4e38)",
                "rescale the column (e.g. to other units), or leave it out of data_loader.settings.feature_columns",
            )
        raise AccordError(
            f"data file {path} line {lines[row]}, column {columns[column]!r}: {value} is not a finite number",
            "replace missing or infinite values (fill or drop the row)",
        )
    return values


def _listed(names: Sequence[Any], most: int = 12) -> str:
    shown = ", ".join(repr(n) for n in names[:most])
    return shown + (f", ... ({len(names)} in all)" if len(names) > most else "")
