"""End to end, no code written: `fx aggregator start` and two `fx collaborator start` processes over
mutual TLS, each site's data a file of its own named in its data.yaml, read by a plan entry
(CSVDataLoader, ImageFolderDataLoader) and trained by the torch runner on Accord's own MLP
(`accord.runners.torch_models.mlp`): the workspace's src/ is not used."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from sklearn.datasets import load_breast_cancer, load_digits
from test_e2e_faults import Sites

from accord.experiment.local import prepare_workspace, run_processes
from accord.metric_records import read_metrics
from accord.plan.loader import Plan

pytestmark = pytest.mark.e2e

SITES = ["collaborator1", "collaborator2"]


def mlp(in_features: int, num_classes: int) -> dict[str, object]:
    return {
        "task_runner.settings.model": "accord.runners.torch_models.mlp",
        "task_runner.settings.model_kwargs": {"in_features": in_features, "hidden": 32, "num_classes": num_classes, "depth": 1},
    }


def federation(root: Path, rounds: int, data_loader: dict[str, object], model: dict[str, object], data: list[Path]) -> Plan:
    overrides = {"data_loader": data_loader, **model, "tasks.settings.train.kwargs": {"epochs": 2}}
    plan = prepare_workspace(root / "ws", collaborators=len(SITES), rounds=rounds, overrides=overrides)
    (plan.workspace / "plan" / "data.yaml").write_text(yaml.safe_dump({n: str(p) for n, p in zip(SITES, data)}))
    return plan


def run(plan: Plan) -> list[float]:
    report = run_processes(plan, timeout=600)
    logs = {n: (plan.workspace / "logs" / f"{n}.log").read_text() for n in ["aggregator", *SITES]}
    assert report.ok, (report.returncodes, logs)
    assert {r.origin for r in report.records} == {"aggregator", *SITES}
    return report.aggregated("aggregated_model_validation/accuracy")


def breast_cancer_files(folder: Path) -> tuple[list[Path], list[str]]:
    """Breast cancer halves with text labels; the second site's file orders its columns otherwise."""
    bunch = load_breast_cancer()
    features = [str(n) for n in bunch.feature_names]
    order = np.random.default_rng(0).permutation(len(bunch.target))
    files = []
    for site, rows in enumerate(np.array_split(order, 2)):
        columns = ["diagnosis", *features] if site == 0 else [*features[::-1], "diagnosis"]
        path = folder / f"site{site + 1}.csv"
        with path.open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(columns)
            for i in rows:
                cells = {"diagnosis": bunch.target_names[bunch.target[i]], **dict(zip(features, map(str, bunch.data[i])))}
                writer.writerow([cells[c] for c in columns])
        files.append(path)
    return files, features


def csv_loader(features: list[str]) -> dict[str, object]:
    settings = {"label_column": "diagnosis", "feature_columns": features, "classes": ["malignant", "benign"], "valid_fraction": 0.2, "seed": 0}
    return {"template": "accord.data.CSVDataLoader", "settings": settings}


def test_two_sites_train_on_their_own_csv_files_from_the_plan(tmp_path: Path) -> None:
    files, features = breast_cancer_files(tmp_path)
    accuracy = run(federation(tmp_path, 3, csv_loader(features), mlp(30, 2), files))
    assert len(accuracy) == 4  # three rounds, then the last model's validation
    assert accuracy[-1] >= 0.9 and accuracy[-1] > accuracy[0], accuracy


def test_two_sites_train_on_their_own_image_folders_from_the_plan(tmp_path: Path) -> None:
    """Digits saved as 8x8 PNGs in class folders, resized to 12x12 on load, one round."""
    bunch = load_digits()
    folders = [tmp_path / "images1", tmp_path / "images2"]
    for i, (pixels, label) in enumerate(zip(bunch.images, bunch.target)):
        target = folders[i % 2] / str(label)
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray((pixels * 255 / 16).astype(np.uint8), "L").save(target / f"{i}.png")
    loader = {"template": "accord.data.ImageFolderDataLoader", "settings": {"image_size": [12, 12], "grayscale": True, "batch_size": 32}}
    accuracy = run(federation(tmp_path, 1, loader, mlp(144, 10), folders))
    assert len(accuracy) == 2 and accuracy[-1] > 0.5 and accuracy[-1] > accuracy[0], accuracy


def test_a_site_whose_csv_has_a_bad_cell_stops_in_one_line_and_the_round_goes_on(tmp_path: Path) -> None:
    """collaborator2's file has "n/a" in a feature cell: it exits 2 with one line naming its file,
    the line and the column; the aggregator hears only that its loader could not be built (never
    the path), and round 0 closes with collaborator1. Its file fixed, collaborator2 starts again
    and takes part in the final validation."""
    files, features = breast_cancer_files(tmp_path)
    good = files[1].read_text(encoding="utf-8")
    lines = good.splitlines()
    lines[6] = ",".join(["n/a", *lines[6].split(",")[1:]])  # line 7, the reversed file's first column: the last feature
    files[1].write_text("\n".join(lines) + "\n", encoding="utf-8")
    plan = federation(tmp_path, 1, csv_loader(features), mlp(30, 2), files)
    sites = Sites(plan)
    try:
        for name in ("aggregator", *SITES):
            sites.start(name)
        assert sites.procs["collaborator2"].wait(timeout=180) == 2
        files[1].write_text(good, encoding="utf-8")
        sites.start("collaborator2")
        codes = sites.wait_all(timeout=300)
    finally:
        sites.close()
    log = sites.log("aggregator")
    assert codes == {"aggregator": 0, "collaborator1": 0, "collaborator2": 0}, log
    site_log = sites.log("collaborator2", 1)
    errors = [line for line in site_log.splitlines() if line.startswith("fx: error:")]
    assert len(errors) == 1 and "Traceback" not in site_log, site_log
    assert f"data file {files[1]} line 7, column {features[-1]!r}: 'n/a' is not a number" in errors[0]
    assert "(fix: make every feature cell a number" in errors[0]
    assert "collaborator2 failed aggregated_model_validation at its site: data loader CSVDataLoader could not be built (AccordError)" in log
    assert files[1].name not in log and "'n/a'" not in log
    records = read_metrics(plan.resolve_path("logs/metrics.jsonl"))
    sites_of = {n: {r.origin for r in records if r.round == n and r.origin != "aggregator"} for n in (0, 1)}
    assert sites_of == {0: {"collaborator1"}, 1: set(SITES)}  # round 1: the final validation, both
