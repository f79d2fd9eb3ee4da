"""fx: user mistakes end in one clear line and exit code 2; help reads as a guide."""

from __future__ import annotations

from pathlib import Path

import pytest

from accord.cli.main import main


def test_missing_plan_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    code = main(["aggregator", "start", "-w", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and "plan.yaml does not exist" in err and "Traceback" not in err


def test_bad_override_names_the_key(tmp_path: Path, capsys) -> None:
    assert main(["workspace", "create", "--prefix", str(tmp_path / "ws"), "--template", "torch_digits"]) == 0
    code = main(["plan", "print", "-w", str(tmp_path / "ws"), "-o", "aggregator.settings.rounds_to_train=zero"])
    err = capsys.readouterr().err
    assert code == 2 and "aggregator.settings.rounds_to_train" in err


def test_missing_certificate_names_file_and_command(workspace_factory) -> None:
    """A real `fx aggregator start` / `fx collaborator start` process without its certificate."""
    import subprocess

    from accord.experiment.local import fx_command
    from accord.workspace.initialize import initialize_model

    plan = workspace_factory(["alpha"], rounds=1)
    initialize_model(plan)
    aggregator = subprocess.run(fx_command("aggregator", "start", "-w", str(plan.workspace)), capture_output=True, text=True, timeout=60)
    assert aggregator.returncode == 2
    assert "agg_localhost.crt" in aggregator.stderr and "fx aggregator certify" in aggregator.stderr
    assert "Traceback" not in aggregator.stderr
    site = subprocess.run(fx_command("collaborator", "start", "-n", "alpha", "-w", str(plan.workspace)), capture_output=True, text=True, timeout=60)
    assert site.returncode == 2
    assert "col_alpha" in site.stderr and "fx collaborator generate-cert-request" in site.stderr


def test_unknown_template_lists_the_known_ones(tmp_path: Path, capsys) -> None:
    assert main(["workspace", "create", "--prefix", str(tmp_path / "ws"), "--template", "nope"]) == 2
    assert "torch_digits" in capsys.readouterr().err


def test_quickstart_rejects_zero_collaborators(tmp_path: Path, capsys) -> None:
    assert main(["quickstart", "--collaborators", "0", "--workspace", str(tmp_path / "ws")]) == 2
    assert "at least 1" in capsys.readouterr().err


@pytest.mark.parametrize("args", [["--help"], ["aggregator", "--help"], ["collaborator", "start", "--help"]])
def test_help(args, capsys) -> None:
    assert main(args) == 0
    assert "Usage: fx" in capsys.readouterr().out
