"""CSVDataLoader: a site's CSV file from plan settings alone; per-site standardization from the
training split only; the plan's class numbering; every bad input refused in one line naming
the file, the line and column, and the fix."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import yaml

from accord.collaborator.data_config import data_path_for
from accord.data import CSVDataLoader, DataLoader
from accord.data.sharding import split_indices
from accord.errors import AccordError, PlanError
from accord.plan.loader import load_plan, update_plan_file
from accord.runners.from_plan import build_data_loader
from accord.workspace.create import create_workspace

CLASSES = ["B", "M"]


def write_csv(path: Path, header: list[str], rows: list[list[object]], delimiter: str = ",") -> Path:
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def table(n: int = 40, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """``n`` rows of three features (very different scales) and labels B/M alternating."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)) * [1.0, 100.0, 0.01] + [5.0, -300.0, 2.0]
    return x, [CLASSES[i % 2] for i in range(n)]


def site_file(path: Path, n: int = 40, seed: int = 0) -> tuple[Path, np.ndarray, list[str]]:
    x, labels = table(n, seed)
    rows = [[label, *values] for label, values in zip(labels, x.tolist())]
    return write_csv(path, ["diagnosis", "radius", "area", "smoothness"], rows), x, labels


def refused(path: Path, **settings: object) -> str:
    """The one line a bad file or setting ends in (with its fix)."""
    with pytest.raises(AccordError) as info:
        CSVDataLoader(str(path), **settings)  # type: ignore[arg-type]
    text = str(info.value)
    assert info.value.fix and "\n" not in text
    return text


def test_standardized_with_the_training_splits_own_statistics(tmp_path: Path) -> None:
    path, x, labels = site_file(tmp_path / "site.csv")
    loader = CSVDataLoader(str(path), label_column="diagnosis", classes=CLASSES, valid_fraction=0.25, seed=3, batch_size=8)
    assert isinstance(loader, DataLoader)
    y = np.array([CLASSES.index(v) for v in labels])
    train, valid = split_indices(y, 0.25, 3)
    assert (loader.train_size, loader.valid_size, loader.num_classes, loader.feature_shape) == (len(train), len(valid), 2, (3,))
    mean, std = x[train].mean(axis=0), x[train].std(axis=0)
    assert np.allclose(loader.feature_mean, mean) and np.allclose(loader.feature_std, std)
    x_train = np.concatenate([b[0] for b in loader.train_batches(0)])
    assert np.allclose(x_train.mean(axis=0), 0, atol=1e-5) and np.allclose(x_train.std(axis=0), 1, atol=1e-4)
    x_valid = np.concatenate([b[0] for b in loader.valid_batches()])
    y_valid = np.concatenate([b[1] for b in loader.valid_batches()])
    assert np.allclose(x_valid, (x[valid] - mean) / std, atol=1e-5)  # the valid split: train's mean and std, not its own
    assert not np.allclose(x_valid.mean(axis=0), 0, atol=1e-3)
    assert np.array_equal(y_valid, y[valid])
    raw = CSVDataLoader(str(path), "diagnosis", classes=CLASSES, standardize=False, valid_fraction=0.25, seed=3)
    assert np.allclose(np.concatenate([b[0] for b in raw.valid_batches()]), x[valid], rtol=1e-6)


def test_the_plans_classes_number_every_site_alike(tmp_path: Path) -> None:
    """A site holding only M and one holding only B still give M index 1 and B index 0."""
    only_m = write_csv(tmp_path / "m.csv", ["y", "a"], [["M", i] for i in range(6)])
    only_b = write_csv(tmp_path / "b.csv", ["y", "a"], [["B", i] for i in range(6)])
    for path, index in ((only_m, 1), (only_b, 0)):
        loader = CSVDataLoader(str(path), "y", classes=CLASSES)
        labels = np.concatenate([b[1] for b in loader.train_batches(0)] + [b[1] for b in loader.valid_batches()])
        assert set(labels.tolist()) == {index} and loader.num_classes == 2


def test_integer_labels_are_their_own_indices_without_classes(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "site.csv", ["f", "label"], [[i * 0.5, (i % 3) + 1] for i in range(30)])
    loader = CSVDataLoader(str(path), feature_columns=["f"])
    labels = np.concatenate([b[1] for b in loader.train_batches(0)])
    assert set(labels.tolist()) == {1, 2, 3} and loader.num_classes == 4


def test_feature_columns_pick_by_name_whatever_the_files_order(tmp_path: Path) -> None:
    path, _, _ = site_file(tmp_path / "a.csv")
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    shuffled = [[r[2], r[0], r[3], r[1]] for r in rows]  # area, diagnosis, smoothness, radius
    other = write_csv(tmp_path / "b.csv", shuffled[0], shuffled[1:], delimiter=";")
    wanted = ["radius", "area", "smoothness"]
    first = CSVDataLoader(str(path), "diagnosis", feature_columns=wanted, classes=CLASSES)
    second = CSVDataLoader(str(other), "diagnosis", feature_columns=wanted, classes=CLASSES, delimiter=";")
    assert second.feature_columns == wanted
    assert np.array_equal(np.concatenate([b[0] for b in first.valid_batches()]), np.concatenate([b[0] for b in second.valid_batches()]))
    narrow = CSVDataLoader(str(path), "diagnosis", feature_columns=["smoothness"], classes=CLASSES)
    assert narrow.feature_shape == (1,)


def test_bom_quotes_crlf_blank_lines_and_spaces_are_read(tmp_path: Path) -> None:
    path = tmp_path / "site.csv"
    lines = ['\ufeff label , "x, first",y'] + [f"{'B' if i % 2 else 'M'}, {i} ,{i * 2}" for i in range(10)] + ["", ""]
    path.write_bytes("\r\n".join(lines).encode("utf-8"))
    loader = CSVDataLoader(str(path), classes=CLASSES)
    assert loader.feature_columns == ["x, first", "y"] and loader.train_size + loader.valid_size == 10


def test_the_split_is_seeded_and_stratified(tmp_path: Path) -> None:
    path, _, _ = site_file(tmp_path / "site.csv")

    def valid(seed: int) -> np.ndarray:
        loader = CSVDataLoader(str(path), "diagnosis", classes=CLASSES, standardize=False, seed=seed)
        return np.concatenate([b[0] for b in loader.valid_batches()])

    assert np.array_equal(valid(1), valid(1)) and not np.array_equal(valid(1), valid(2))
    loader = CSVDataLoader(str(path), "diagnosis", classes=CLASSES)
    assert np.bincount(np.concatenate([b[1] for b in loader.valid_batches()])).tolist() == [4, 4]


def test_a_plan_entry_builds_it_with_no_code(tmp_path: Path) -> None:
    path, _, _ = site_file(tmp_path / "site.csv")
    workspace = create_workspace(tmp_path / "ws", "torch_digits")
    plan_file = workspace / "plan" / "plan.yaml"
    entry = {"template": "accord.data.CSVDataLoader", "settings": {"label_column": "diagnosis", "classes": CLASSES, "batch_size": 16}}
    update_plan_file(plan_file, {"collaborators": ["one"], "data_loader": entry})
    (workspace / "plan" / "data.yaml").write_text(yaml.safe_dump({"one": str(path)}))
    plan = load_plan(plan_file, workspace=workspace)
    loader = build_data_loader(plan, data_path_for(plan, "one"))
    assert isinstance(loader, CSVDataLoader) and loader.batch_size == 16 and loader.num_classes == 2
    update_plan_file(plan_file, {"data_loader.settings.lable_column": "diagnosis"})
    with pytest.raises(PlanError, match="lable_column"):
        plan = load_plan(plan_file, workspace=workspace)
        build_data_loader(plan, data_path_for(plan, "one"))


def test_missing_label_column(tmp_path: Path) -> None:
    path, _, _ = site_file(tmp_path / "site.csv")
    line = refused(path, label_column="outcome", classes=CLASSES)
    assert f"data file {path} has no label column 'outcome' (its columns: 'diagnosis', 'radius'" in line
    assert "data_loader.settings.label_column" in line


def test_a_non_numeric_cell_names_its_line_and_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "site.csv", ["y", "a", "b"], [["B", 1, 2], ["M", 3, 4], ["B", 5, "n/a"]])
    line = refused(path, label_column="y", classes=CLASSES)
    assert f"data file {path} line 4, column 'b': 'n/a' is not a number" in line
    empty = write_csv(tmp_path / "empty_cell.csv", ["y", "a"], [["B", 1], ["M", ""]])
    assert "line 3, column 'a': '' is not a number" in refused(empty, label_column="y", classes=CLASSES)


@pytest.mark.parametrize(("value", "shown"), [("nan", "nan"), ("inf", "inf"), ("-Infinity", "-inf")])
def test_a_non_finite_cell_is_refused(tmp_path: Path, value: str, shown: str) -> None:
    path = write_csv(tmp_path / "site.csv", ["y", "a", "b"], [["B", 1, 2], ["M", 3, value]])
    assert f"line 3, column 'b': {shown} is not a finite number" in refused(path, label_column="y", classes=CLASSES)


def test_ragged_rows(tmp_path: Path) -> None:
    path = tmp_path / "site.csv"
    path.write_text("y,a,b\nB,1,2\nM,3\n", encoding="utf-8")
    assert f"data file {path} line 3 has 2 cells but the header names 3 columns" in refused(path, label_column="y", classes=CLASSES)
    path.write_text("y,a,b\nB,1,2,9\n", encoding="utf-8")
    assert "line 2 has 4 cells" in refused(path, label_column="y", classes=CLASSES)


def test_empty_and_header_only_files(tmp_path: Path) -> None:
    path = tmp_path / "site.csv"
    path.write_bytes(b"")
    assert f"data file {path} is empty" in refused(path)
    path.write_text("\n\n", encoding="utf-8")
    assert "is empty" in refused(path)
    path.write_text("label,a\n", encoding="utf-8")
    assert f"data file {path} has a header but no data rows" in refused(path)


def test_a_non_utf8_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "site.csv"
    path.write_bytes("label,caf\u00e9\n0,1\n1,2\n".encode("utf-8") + "0,3\nna\u00efve,4\n".encode("latin-1"))
    line = refused(path)
    assert f"data file {path} line 5 is not UTF-8 text" in line and "iconv" in line


def test_a_label_not_in_the_plans_classes_names_the_value_and_line(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "site.csv", ["y", "a"], [["B", 1], ["M", 2], ["X", 3]])
    line = refused(path, label_column="y", classes=CLASSES)
    assert f"data file {path} line 4: the label 'X' (column 'y') is not one of the plan's classes ('B', 'M')" in line
    assert "data_loader.settings.classes" in line


def test_text_labels_need_the_plans_classes(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "site.csv", ["y", "a"], [["B", 1], ["M", 2]])
    line = refused(path, label_column="y")
    assert "line 2: the label 'B' (column 'y') is not a class index 0, 1, ..." in line
    assert "list the class names in data_loader.settings.classes" in line
    negative = write_csv(tmp_path / "negative.csv", ["y", "a"], [["1", 1], ["-1", 2]])
    assert "line 3: the label '-1'" in refused(negative, label_column="y")


def test_feature_column_problems(tmp_path: Path) -> None:
    path, _, _ = site_file(tmp_path / "site.csv")
    assert "has no column 'volume' (data_loader.settings.feature_columns" in refused(
        path, label_column="diagnosis", feature_columns=["radius", "volume"], classes=CLASSES
    )
    assert "feature_columns names the label column 'diagnosis'" in refused(
        path, label_column="diagnosis", feature_columns=["radius", "diagnosis"], classes=CLASSES
    )
    assert "feature_columns names 'radius' twice" in refused(path, label_column="diagnosis", feature_columns=["radius", "radius"])
    twice = write_csv(tmp_path / "twice.csv", ["y", "a", "a"], [["B", 1, 2]])
    assert "names the column 'a' twice (columns 2 and 3)" in refused(twice, label_column="y", classes=CLASSES)
    unnamed = write_csv(tmp_path / "unnamed.csv", ["", "y", "a"], [[0, "B", 1]])
    assert "column 1 of the header has no name" in refused(unnamed, label_column="y", classes=CLASSES)
    label_only = write_csv(tmp_path / "label_only.csv", ["y"], [["B"]])
    assert "no feature column besides the label 'y'" in refused(label_only, label_column="y", classes=CLASSES)


def test_unclosed_quote_missing_file_and_too_few_rows(tmp_path: Path) -> None:
    path = tmp_path / "site.csv"
    path.write_text('y,a\nB,"1\n', encoding="utf-8")
    assert "is not valid CSV" in refused(path, label_column="y", classes=CLASSES)
    missing = tmp_path / "nowhere.csv"
    assert f"data file {missing} does not exist" in refused(missing) and "plan/data.yaml" in refused(missing)
    one = write_csv(tmp_path / "one.csv", ["y", "a"], [["B", 1]])
    assert "has 1 data rows: too few for a training and a validation split" in refused(one, label_column="y", classes=CLASSES)


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"delimiter": ";;"}, "delimiter is ';;'; it must be one character"),
        ({"delimiter": '"'}, "delimiter"),
        ({"standardize": "yes"}, "standardize is 'yes'; it must be true or false"),
        ({"label_column": 3}, "label_column is 3; it must be a column name"),
        ({"seed": True}, "seed is True; it must be an integer"),
        ({"valid_fraction": 1.5}, "valid_fraction is 1.5"),
        ({"feature_columns": "radius"}, "feature_columns is 'radius'; it must be a list of names"),
        ({"classes": []}, "classes is []; it must be a non-empty list"),
        ({"classes": ["B", "B"]}, "classes names 'B' twice"),
        ({"classes": [["B"]]}, "classes[0] is ['B']"),
        ({"batch_size": 0}, "batch_size is 0"),
    ],
)
def test_bad_settings_name_the_setting(tmp_path: Path, settings: dict, words: str) -> None:
    path, _, _ = site_file(tmp_path / "site.csv")
    assert words in refused(path, **{"label_column": "diagnosis", "classes": CLASSES, **settings})


def test_lines_are_named_right_past_the_first_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("accord.data.csv_file._BLOCK_ROWS", 2)
    rows: list[list[object]] = [[CLASSES[i % 2], i, i * 2] for i in range(9)]
    path = write_csv(tmp_path / "site.csv", ["y", "a", "b"], rows)
    loader = CSVDataLoader(str(path), "y", classes=CLASSES, standardize=False, valid_fraction=0.3)
    x = np.concatenate([b[0] for b in loader.train_batches(0)] + [b[0] for b in loader.valid_batches()])
    assert sorted(x[:, 0].tolist()) == list(range(9)) and np.array_equal(x[:, 1], 2 * x[:, 0])
    rows[6][2] = "inf"
    assert "line 8, column 'b': inf is not a finite number" in refused(write_csv(path, ["y", "a", "b"], rows), label_column="y", classes=CLASSES)


def test_a_value_beyond_float32_is_refused_at_its_line_and_column(tmp_path: Path) -> None:
    """1e308 is finite in float64 but inf in float32: once standardized (mean and std inf) or cast."""
    rows: list[list[object]] = [[CLASSES[i % 2], i, 1e308] for i in range(20)]
    path = write_csv(tmp_path / "site.csv", ["y", "a", "b"], rows)
    line = refused(path, label_column="y", classes=CLASSES)
    assert f"data file {path} line 2, column 'b': 1e+308 is beyond float32's range" in line
    rows = [[CLASSES[i % 2], i, 1.0] for i in range(20)]
    rows[5][1] = -4e38
    path = write_csv(tmp_path / "raw.csv", ["y", "a", "b"], rows)
    assert "line 7, column 'a': -4e+38 is beyond float32's range" in refused(path, label_column="y", classes=CLASSES, standardize=False)


def test_values_near_float32_max_standardize_to_finite_arrays(tmp_path: Path) -> None:
    rows: list[list[object]] = [[CLASSES[i % 2], 3e38 if i % 3 else -3e38, i] for i in range(30)]
    loader = CSVDataLoader(str(write_csv(tmp_path / "site.csv", ["y", "a", "b"], rows)), "y", classes=CLASSES)
    x = np.concatenate([b[0] for b in loader.train_batches(0)])
    assert np.isfinite(x).all() and np.allclose(x.mean(axis=0), 0, atol=1e-5) and np.allclose(x.std(axis=0), 1, atol=1e-4)


def test_a_validation_value_standardized_past_float32_names_the_column(tmp_path: Path) -> None:
    """The training rows barely vary (std ~1e-150): a validation row's 1.0 becomes ~1e150, inf in float32."""
    y = np.array([i % 2 for i in range(20)])
    _, valid = split_indices(y, 0.2, 0)
    rows: list[list[object]] = [[CLASSES[int(y[i])], i, 1.0 if i in valid else (1e-150 if i % 4 < 2 else -1e-150)] for i in range(20)]
    line = refused(write_csv(tmp_path / "site.csv", ["y", "a", "b"], rows), label_column="y", classes=CLASSES)
    assert "column 'b': a validation value standardizes beyond float32's range" in line and "feature_columns" in line


@pytest.mark.parametrize("label", ["99999999999999999999999", "1000000000", "10000", "00000000000000010000"])
def test_a_class_index_past_the_limit_is_refused(tmp_path: Path, label: str) -> None:
    path = write_csv(tmp_path / "site.csv", ["y", "a"], [["1", 1], ["0", 2], [label, 3]])
    line = refused(path, label_column="y")
    assert f"line 4: the label {label!r} (column 'y') is not a class index below 10,000" in line
    assert "data_loader.settings.classes" in line


def test_the_largest_class_index_is_read(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "site.csv", ["y", "a"], [["0009999", i] for i in range(4)] + [["0", i] for i in range(4)])
    assert CSVDataLoader(str(path), "y").num_classes == 10_000


def test_a_negative_seed_names_the_setting(tmp_path: Path) -> None:
    path, _, _ = site_file(tmp_path / "site.csv")
    line = refused(path, label_column="diagnosis", classes=CLASSES, seed=-1)
    assert "data_loader.settings.seed is -1; it must be an integer >= 0" in line


def test_cr_only_line_endings_say_so(tmp_path: Path) -> None:
    path = tmp_path / "site.csv"
    path.write_bytes(b"y,a\rB,1\rM,2\rB,3\rM,4\r")
    line = refused(path, label_column="y", classes=CLASSES)
    assert f"data file {path} ends its lines with a bare carriage return" in line and "convert the line endings to \\n" in line
    assert "unclosed quote" not in line
    path.write_bytes(b'y,a\r\nB,"1\r\n')  # CRLF with a real unclosed quote: still named so
    assert "is not valid CSV" in refused(path, label_column="y", classes=CLASSES)
