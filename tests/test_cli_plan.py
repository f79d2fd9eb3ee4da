"""fx plan: initialize (address, initial model), freeze, and named plans."""

from __future__ import annotations

import socket
import stat
from pathlib import Path

import pytest
import yaml
from conftest import FAST

from accord.cli.main import main
from accord.plan.loader import load_plan, read_yaml, update_plan_file


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    assert main(["workspace", "create", "--prefix", str(root), "--template", "torch_digits"]) == 0
    update_plan_file(root / "plan" / "plan.yaml", dict(FAST))
    return root


def plan_file(ws: Path) -> Path:
    return ws / "plan" / "plan.yaml"


def rounds(path: Path) -> int:
    return read_yaml(path)["aggregator"]["settings"]["rounds_to_train"]


def set_rounds_by_hand(path: Path, value: int) -> None:
    path.chmod(path.stat().st_mode | stat.S_IWUSR)
    text = path.read_text()
    path.write_text(text.replace(f"rounds_to_train: {rounds(path)}", f"rounds_to_train: {value}"))


def test_initialize_writes_the_address_and_the_initial_model(ws: Path, capsys) -> None:
    assert main(["plan", "initialize", "-w", str(ws), "-a", "agg.example.org"]) == 0
    out = capsys.readouterr().out
    loaded = load_plan(plan_file(ws))
    assert loaded.model.network.settings.agg_addr == "agg.example.org"
    assert (ws / "save" / "init.safetensors").is_file()
    assert f"plan hash {loaded.hash}" in out


def test_initialize_defaults_to_this_hosts_fqdn(ws: Path, monkeypatch) -> None:
    monkeypatch.setattr(socket, "getfqdn", lambda *a: "node7.hospital.example")
    assert main(["plan", "initialize", "-w", str(ws)]) == 0
    assert load_plan(plan_file(ws)).model.network.settings.agg_addr == "node7.hospital.example"


def test_frozen_plan_keeps_its_address(ws: Path, monkeypatch, capsys) -> None:
    assert main(["plan", "initialize", "-w", str(ws), "-a", "agg.example.org"]) == 0
    assert main(["plan", "freeze", "-w", str(ws)]) == 0
    monkeypatch.setattr(socket, "getfqdn", lambda *a: "elsewhere.example")
    assert main(["plan", "initialize", "-w", str(ws)]) == 0  # no -a: the address stays
    assert load_plan(plan_file(ws)).model.network.settings.agg_addr == "agg.example.org"
    capsys.readouterr()
    assert main(["plan", "initialize", "-w", str(ws), "-a", "other.example"]) == 2
    err = capsys.readouterr().err
    assert "frozen" in err and err.count("\n") == 1
    assert load_plan(plan_file(ws)).model.network.settings.agg_addr == "agg.example.org"


def test_freeze_stores_the_hash_and_makes_the_file_read_only(ws: Path, capsys) -> None:
    plan_file(ws).write_text("# agreed by all sites\n" + plan_file(ws).read_text())
    expected = load_plan(plan_file(ws)).hash
    assert main(["plan", "freeze", "-w", str(ws)]) == 0
    assert expected in capsys.readouterr().out
    assert stat.S_IMODE(plan_file(ws).stat().st_mode) == 0o444
    assert read_yaml(plan_file(ws))["hash"] == expected
    assert plan_file(ws).read_text().startswith("# agreed by all sites\n")  # comments kept
    assert load_plan(plan_file(ws)).hash == expected  # the stored hash checks out
    assert main(["plan", "freeze", "-w", str(ws)]) == 0
    assert "already frozen" in capsys.readouterr().out


def test_editing_a_frozen_plan_is_caught_on_load(ws: Path, capsys) -> None:
    assert main(["plan", "freeze", "-w", str(ws)]) == 0
    set_rounds_by_hand(plan_file(ws), 3)
    assert rounds(plan_file(ws)) == 3
    assert main(["plan", "print", "-w", str(ws)]) == 2
    err = capsys.readouterr().err
    assert "changed after it was frozen" in err and err.count("\n") == 1
    assert main(["plan", "freeze", "-w", str(ws)]) == 2  # refreezing does not bless the edit


def test_save_switch_list_remove(ws: Path, capsys) -> None:
    path = plan_file(ws)
    assert main(["plan", "list", "-w", str(ws)]) == 0
    assert "no saved plans" in capsys.readouterr().out
    assert main(["plan", "save", "-n", "baseline", "-w", str(ws)]) == 0
    assert (ws / "plan" / "plans" / "baseline" / "plan.yaml").read_bytes() == path.read_bytes()
    assert main(["plan", "save", "-n", "baseline", "-w", str(ws)]) == 2
    assert "--force" in capsys.readouterr().err

    set_rounds_by_hand(path, 3)
    assert main(["plan", "save", "-n", "short", "-w", str(ws)]) == 0
    set_rounds_by_hand(path, 4)  # unsaved edits to the active plan 'short'
    assert main(["plan", "switch", "-n", "baseline", "-w", str(ws)]) == 0
    assert rounds(path) == 10
    assert rounds(ws / "plan" / "plans" / "short" / "plan.yaml") == 4  # saved back on switch
    capsys.readouterr()
    assert main(["plan", "list", "-w", str(ws)]) == 0
    assert capsys.readouterr().out.splitlines() == ["* baseline", "  short"]

    assert main(["plan", "remove", "-n", "baseline", "-w", str(ws)]) == 2
    assert "active" in capsys.readouterr().err
    assert main(["plan", "switch", "-n", "short", "-w", str(ws)]) == 0
    assert rounds(path) == 4
    assert main(["plan", "remove", "-n", "baseline", "-w", str(ws)]) == 0
    assert not (ws / "plan" / "plans" / "baseline").exists()
    assert main(["plan", "switch", "-n", "baseline", "-w", str(ws)]) == 2
    err = capsys.readouterr().err
    assert "no plan named 'baseline'" in err and "short" in err


def test_switch_without_an_active_plan_keeps_the_working_one_as_default(ws: Path) -> None:
    plans = ws / "plan" / "plans"
    (plans / "other").mkdir(parents=True)
    (plans / "other" / "plan.yaml").write_text(yaml.safe_dump({"aggregator": {"settings": {"rounds_to_train": 2}}}))
    assert main(["plan", "switch", "-n", "other", "-w", str(ws)]) == 0
    assert rounds(plans / "default" / "plan.yaml") == 10 and rounds(plan_file(ws)) == 2
    assert (plans / ".active").read_text().strip() == "other"


def test_frozen_plans_stay_frozen_across_switches(ws: Path) -> None:
    assert main(["plan", "save", "-n", "draft", "-w", str(ws)]) == 0
    assert main(["plan", "freeze", "-w", str(ws)]) == 0
    assert main(["plan", "save", "-n", "agreed", "-w", str(ws)]) == 0
    assert main(["plan", "switch", "-n", "draft", "-w", str(ws)]) == 0
    assert plan_file(ws).stat().st_mode & stat.S_IWUSR and "hash" not in read_yaml(plan_file(ws))
    assert main(["plan", "switch", "-n", "agreed", "-w", str(ws)]) == 0
    assert stat.S_IMODE(plan_file(ws).stat().st_mode) == 0o444 and "hash" in read_yaml(plan_file(ws))


@pytest.mark.parametrize("command", ["save", "switch", "remove"])
@pytest.mark.parametrize("name", ["../escape", "a/b", "", ".active", "x" * 65])
def test_plan_names_are_simple_identifiers(ws: Path, command: str, name: str, capsys) -> None:
    assert main(["plan", command, "-n", name, "-w", str(ws)]) == 2
    assert "not a valid plan name" in capsys.readouterr().err
    assert not (ws / "plan" / "escape").exists()


@pytest.mark.parametrize("group, words", [("plan", ["initialize", "freeze", "switch"]), ("workspace", ["export", "import"])])
def test_group_help_reads_as_a_guide(group: str, words: list[str], capsys) -> None:
    assert main([group, "--help"]) == 0
    out = capsys.readouterr().out
    assert "In order" in out and all(word in out for word in words)
