"""A site's own failure reaches the aggregator as a task failure (real processes over mutual TLS)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import FAST, write_digits_shards
from test_e2e_faults import Sites

from accord.experiment.local import prepare_workspace
from accord.metric_records import read_metrics

pytestmark = pytest.mark.e2e

NPZ = "accord.data.npz.NpzDataLoader"


def test_a_site_with_a_missing_data_path_reports_it_and_the_round_closes_without_waiting(tmp_path: Path) -> None:
    """wait_for_all, 3 sites: collaborator3's data file does not exist. It joins, reports the
    failure of its first task (to the aggregator: the loader's class and the error's type only,
    never the path nor the error's text) and exits 2 with one line naming the loader, the path and the fix;
    round 0 closes with the other two at once (no deadline). Fixed and started again, it takes
    part in round 1."""
    plan = prepare_workspace(tmp_path / "ws", 3, 2, overrides={**FAST, "data_loader.template": NPZ})
    shards, _, _ = write_digits_shards(tmp_path / "data", 3)
    missing = tmp_path / "data" / "gone.npz"
    data_yaml = plan.workspace / "plan" / "data.yaml"
    data_yaml.write_text(yaml.safe_dump({"collaborator1": str(shards[0]), "collaborator2": str(shards[1]), "collaborator3": str(missing)}))
    sites = Sites(plan)
    try:
        sites.start("aggregator")
        sites.start("collaborator1")
        sites.start("collaborator2")
        failing = sites.start("collaborator3")
        assert failing.wait(timeout=180) == 2
        data_yaml.write_text(yaml.safe_dump({"collaborator1": str(shards[0]), "collaborator2": str(shards[1]), "collaborator3": str(shards[2])}))
        sites.start("collaborator3")  # the operator fixed data.yaml
        codes = sites.wait_all()
    finally:
        sites.close()
    log = sites.log("aggregator")
    assert codes == {"aggregator": 0, "collaborator1": 0, "collaborator2": 0, "collaborator3": 0}, log
    errors = [line for line in sites.log("collaborator3", 1).splitlines() if line.startswith("fx: error:")]
    assert len(errors) == 1, sites.log("collaborator3", 1)
    assert f"data loader {NPZ} cannot load the data of collaborator3: data file {missing} does not exist" in errors[0]
    assert "(fix: set this collaborator's data path in plan/data.yaml" in errors[0]
    assert "Traceback" not in sites.log("collaborator3", 1)
    assert "collaborator3 failed aggregated_model_validation at its site: data loader NpzDataLoader could not be built (" in log
    assert str(missing) not in log and "does not exist" not in log  # the site's path and error text stay at the site
    assert "round 0 closed without" not in log  # it closed because nobody owed anything, not by a policy
    records = read_metrics(plan.resolve_path("logs/metrics.jsonl"))
    trained = {(r.round, r.origin) for r in records if r.task == "train" and r.origin != "aggregator"}
    assert {o for n, o in trained if n == 0} == {"collaborator1", "collaborator2"}
    assert {o for n, o in trained if n == 1} == {"collaborator1", "collaborator2", "collaborator3"}
    assert [r.round for r in records if r.metric == "round_seconds"] == [0, 1, 2]
