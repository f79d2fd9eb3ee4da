"""`fx run`'s refusals: one line naming the thing and the fix, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from accord.cli.main import main
from accord.plan.loader import update_plan_file
from accord.workspace.create import create_workspace


def refused(args: list[str], capsys) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return create_workspace(tmp_path / "ws", "torch_digits")


def test_a_data_path_for_a_site_not_in_the_run(workspace: Path, capsys) -> None:
    err = refused(["run", "-w", str(workspace), "-c", "2", "--data-path", "hospital=/data/a.npz"], capsys)
    assert "--data-path names hospital, not among this run's collaborators collaborator1, collaborator2" in err
    assert not (workspace / ".accord-run").exists()


@pytest.mark.parametrize("item", ["collaborator1", "=x.npz", "collaborator1="])
def test_a_data_path_that_is_not_name_equals_path(workspace: Path, capsys, item: str) -> None:
    assert "is not NAME=PATH" in refused(["run", "-w", str(workspace), "--data-path", item], capsys)


def test_a_loader_that_takes_a_path_needs_one_per_site(workspace: Path, capsys) -> None:
    update_plan_file(workspace / "plan" / "plan.yaml", {"data_loader": {"template": "accord.data.npz.NpzDataLoader", "settings": {}}})
    err = refused(["run", "-w", str(workspace), "-c", "2", "--data-path", "collaborator1=a.npz"], capsys)
    assert "collaborator collaborator2 has no data" in err and "--data-path collaborator2=PATH" in err


@pytest.mark.parametrize("value", ["0", "-1"])
def test_counts_below_one(workspace: Path, capsys, value: str) -> None:
    assert "must be at least 1" in refused(["run", "-w", str(workspace), "-c", value], capsys)
    assert "must be at least 1" in refused(["run", "-w", str(workspace), "-r", value], capsys)


@pytest.mark.parametrize("value", ["-1", "0", "0.5", "nan", "inf"])
def test_a_timeout_that_is_not_at_least_a_second_is_refused_before_anything_is_made(workspace: Path, capsys, value: str) -> None:
    err = refused(["run", "-w", str(workspace), "--timeout", value], capsys)
    assert "--timeout is" in err and "at least 1" in err and "--timeout 600" in err
    assert not (workspace / ".accord-run").exists()


def test_more_local_processes_than_a_machine_should_start_are_refused_with_fx_simulate_named(workspace: Path, capsys) -> None:
    err = refused(["run", "-w", str(workspace), "-c", "5000"], capsys)
    assert "5000 collaborators would start 5000 processes; at most 64" in err and "fx simulate" in err
    assert not (workspace / ".accord-run").exists()
    update_plan_file(workspace / "plan" / "plan.yaml", {"collaborators": [f"site{i}" for i in range(65)]})
    assert "65 collaborators would start 65 processes" in refused(["run", "-w", str(workspace)], capsys)
    assert "at most 64" in refused(["quickstart", "-c", "65", "-w", str(workspace.parent / "qs")], capsys)
    assert not (workspace.parent / "qs").exists()


def test_a_scratch_folder_fx_run_did_not_make_is_left_alone(workspace: Path, tmp_path: Path, capsys) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    err = refused(["run", "-w", str(workspace), "--scratch", str(mine)], capsys)
    assert "is not a folder fx run made" in err
    assert (mine / "notes.txt").read_text() == "keep me"
    for inside in (workspace, workspace / "src" / "run", tmp_path):
        assert "would hold or lie inside the workspace's own files" in refused(["run", "-w", str(workspace), "--scratch", str(inside)], capsys)
    assert sorted(p.name for p in (workspace / "src").iterdir()) == ["__init__.py", "model.py"]


def test_each_sites_data_path_in_order_of_precedence(workspace: Path, tmp_path: Path, monkeypatch) -> None:
    from accord.experiment.workspace_run import site_data_paths
    from accord.plan.loader import load_plan

    (workspace / "plan" / "data.yaml").write_text("b: 7\nc: rel.npz\n")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rel.npz").write_bytes(b"")
    plan = load_plan(workspace / "plan" / "plan.yaml")
    paths = site_data_paths(plan, ["a", "b", "c", "d"], {"a": "rel.npz", "d": "not/here.npz"})
    # --data-path, then data.yaml, then (a loader with collaborator_count) the shard number;
    # a relative path that exists from here made absolute, any other value as it is
    assert paths == {"a": str(tmp_path / "rel.npz"), "b": 7, "c": str(tmp_path / "rel.npz"), "d": "not/here.npz"}
    names = ["collaborator1", "collaborator2", "collaborator3"]
    assert site_data_paths(plan, names, {}) == {"collaborator1": 1, "collaborator2": 2, "collaborator3": 3}


# -- which sites run: the plan's list, else an OpenFL workspace's data.yaml lines ----------------


def test_openfl_data_yaml_lines_choose_the_sites_when_the_plan_lists_none(workspace: Path, tmp_path: Path) -> None:
    """OpenFL's keras/mnist ships cols.yaml empty and data.yaml `one,1`: `fx run` runs `one` on
    shard 1 of the plan's collaborator_count (what the line means in OpenFL), not collaborator1..2."""
    from accord.collaborator.data_config import read_data_config
    from accord.experiment.workspace_run import prepare_run

    (workspace / "plan" / "data.yaml").write_text("# collaborator_name,data_directory_path\none,1\nthree,3\n")
    update_plan_file(workspace / "plan" / "plan.yaml", {"data_loader.settings.collaborator_count": 3})
    setup = prepare_run(workspace, scratch=tmp_path / "run")
    assert setup.sites_from_data_config and setup.plan.model.collaborators == ["one", "three"]
    assert read_data_config(setup.plan.workspace / "plan" / "data.yaml") == {"one": "1", "three": "3"}  # the lines, as OpenFL wrote them
    assert dict(setup.plan.model.data_loader.settings)["collaborator_count"] == 3  # the plan's, kept


def test_the_plans_own_list_still_wins_over_data_yaml(workspace: Path) -> None:
    from accord.experiment.workspace_run import site_names
    from accord.plan.loader import load_plan

    (workspace / "plan" / "data.yaml").write_text("one,1\n")
    update_plan_file(workspace / "plan" / "plan.yaml", {"collaborators": ["a", "b"]})
    assert site_names(load_plan(workspace / "plan" / "plan.yaml"), None) == (["a", "b"], False)


def test_a_count_that_would_run_none_of_data_yamls_sites_is_refused(workspace: Path, capsys) -> None:
    (workspace / "plan" / "data.yaml").write_text("one,1\n")
    err = refused(["run", "-w", str(workspace), "-c", "2"], capsys)
    assert "names the sites one, none of which --collaborators 2 (collaborator1, collaborator2) would run" in err
    assert "drop --collaborators to run the sites data.yaml names (one)" in err
    assert not (workspace / ".accord-run").exists()
    # a count that runs some of them is the user's choice: the others simply do not run
    (workspace / "plan" / "data.yaml").write_text("collaborator1: 1\ncollaborator2: 2\n")
    from accord.experiment.workspace_run import site_names
    from accord.plan.loader import load_plan

    assert site_names(load_plan(workspace / "plan" / "plan.yaml"), 1) == (["collaborator1"], False)
