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


def test_missing_certificate_names_file_and_command(workspace_factory, capsys) -> None:
    plan = workspace_factory(["alpha"], rounds=1)
    from accord.workspace.initialize import initialize_model

    initialize_model(plan)
    code = main(["aggregator", "start", "-w", str(plan.workspace)])
    err = capsys.readouterr().err
    assert code == 2
    assert "agg_localhost.crt" in err and "fx aggregator certify" in err


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
