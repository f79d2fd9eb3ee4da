"""fx plot: the curves of logs/metrics.jsonl as a PNG; a missing or bad file is one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from accord.cli.main import main
from accord.workspace.create import create_workspace

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_metrics(workspace: Path, rounds: int, sites: tuple[str, ...] = ("site1", "site2")) -> Path:
    path = workspace / "logs" / "metrics.jsonl"
    path.parent.mkdir(exist_ok=True)
    lines = []
    for r in range(rounds):
        for i, site in enumerate(sites):
            lines.append({"round": r, "origin": site, "task": "aggregated_model_validation", "metric": "accuracy", "value": 0.1 * r + 0.01 * i})
        lines.append({"round": r, "origin": "aggregator", "task": "aggregated_model_validation", "metric": "accuracy", "value": 0.1 * r})
        lines.append({"round": r, "origin": "aggregator", "task": "train", "metric": "loss", "value": 2.0 / (r + 1)})
        lines.append({"round": r, "origin": "aggregator", "task": "round", "metric": "bytes_received", "value": 1000.0 + r})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return create_workspace(tmp_path / "ws", "torch_digits")


def plot(workspace: Path, *args: str) -> int:
    return main(["plot", "-w", str(workspace), *args])


def test_the_png_is_valid_and_changes_with_the_data(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_metrics(workspace, rounds=2)
    out = workspace / "two.png"
    assert plot(workspace, "--out", str(out)) == 0
    assert "aggregated_model_validation/accuracy, train/loss" in capsys.readouterr().out  # not round/*: only when named
    two = out.read_bytes()
    assert two.startswith(PNG_MAGIC)
    with Image.open(out) as image:
        image.verify()
    with Image.open(out) as image:
        width, _ = image.size
        assert image.convert("L").getextrema()[0] < 64  # something dark was drawn

    write_metrics(workspace, rounds=6)
    assert plot(workspace, "--out", str(out)) == 0
    assert out.read_bytes() != two

    # one panel (the metric named), with the sites' curves: a narrower image than two panels
    assert plot(workspace, "--out", str(out), "--metric", "aggregated_model_validation/accuracy", "--sites") == 0
    with Image.open(out) as image:
        assert image.size[0] < width
    assert plot(workspace, "--metric", "round/bytes_received") == 0
    assert (workspace / "logs" / "metrics.png").read_bytes().startswith(PNG_MAGIC)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "no metrics file at"),
        ("", "holds no metric records"),
        ('{"round": 0}\n{"round": 1, "origin": "a", "task": "t", "metric": "m", "value": 1}\n', "line 1, is not a metric record"),
    ],
)
def test_a_missing_or_bad_metrics_file_is_one_line(
    workspace: Path, capsys: pytest.CaptureFixture[str], content: str | None, expected: str
) -> None:
    if content is not None:
        (workspace / "logs").mkdir(exist_ok=True)
        (workspace / "logs" / "metrics.jsonl").write_text(content)
    assert plot(workspace) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1, err
    assert not (workspace / "logs" / "metrics.png").exists()


def test_an_unknown_metric_names_the_known_ones(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_metrics(workspace, rounds=1)
    assert plot(workspace, "--metric", "train/accuracy") == 2
    err = capsys.readouterr().err
    assert "no aggregated metric 'train/accuracy'" in err and "train/loss" in err and err.count("\n") == 1


def test_only_the_rounds_timing_and_bytes_is_one_line_naming_them(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = [{"round": r, "origin": "aggregator", "task": "round", "metric": "bytes_received", "value": 1.0 + r} for r in range(3)]
    (workspace / "logs").mkdir(exist_ok=True)
    (workspace / "logs" / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert plot(workspace) == 2  # a ValueError traceback ("cannot write empty image") before
    err = capsys.readouterr().err
    assert "no aggregated metric but the round's timing and bytes" in err and "round/bytes_received" in err, err
    assert err.count("\n") == 1
    assert not (workspace / "logs" / "metrics.png").exists()
    assert plot(workspace, "--metric", "round/bytes_received") == 0  # named, they are drawn
    assert (workspace / "logs" / "metrics.png").read_bytes().startswith(PNG_MAGIC)


def test_the_default_plot_draws_12_panels_the_plans_metrics_first(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = []
    for r in range(2):
        lines += [{"round": r, "origin": "aggregator", "task": "aaa", "metric": f"m{i:02d}", "value": float(i)} for i in range(30)]
        lines.append({"round": r, "origin": "aggregator", "task": "train", "metric": "loss", "value": 1.0})
        lines.append({"round": r, "origin": "aggregator", "task": "aggregated_model_validation", "metric": "accuracy", "value": 0.5})
    (workspace / "logs").mkdir(exist_ok=True)
    (workspace / "logs" / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert plot(workspace) == 0
    wrote, more = capsys.readouterr().out.splitlines()
    drawn = wrote.split(": ", 1)[1].split(", ")
    # the plan's best_metric, then its tasks' metrics, then the others by name
    assert drawn == ["aggregated_model_validation/accuracy", "train/loss", *(f"aaa/m{i:02d}" for i in range(10))]
    assert more == "20 more not drawn; choose with --metric: " + ", ".join(f"aaa/m{i:02d}" for i in range(10, 30))
    assert plot(workspace, "--metric", "aaa/m29") == 0
    assert capsys.readouterr().out.strip().endswith(": aaa/m29")
