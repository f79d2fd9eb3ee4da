"""A kill -9 of ``fx aggregator start`` during a secure round's unmask, with real processes over
mutual TLS (issue 12): two sites revealed, the third is held before revealing; the restarted
aggregator resumes the round at ``unmask`` from its checkpoint (the same seed and request), the
sites that revealed answer the same again, the third reveals, and the model is plain FedAvg
over the same sites, with the same metrics (the mask phase's validation and train metrics, each
site's records, carried in the checkpoint); each site's secure memory is 0600 in its state
folder."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest
from test_e2e_faults import Sites, wait_for
from test_e2e_secagg import HANGING_RUNNER, assert_models_close, same_init, workspace

from accord.metric_records import read_metrics
from accord.plan.loader import Plan

pytestmark = pytest.mark.e2e

#: the test workspace's runner module also holds a site before it reveals (HOLD_UNMASK: a path
#: prefix; it touches PREFIX.held and waits for PREFIX.go): test code, in the workspace only
HOLDING = HANGING_RUNNER + '''

import accord.collaborator.secure_site as _secure_site

_answer = _secure_site.SecureSite.answer


def _held_answer(self, phase, round_number, payload, global_model):
    hold = os.environ.get("HOLD_UNMASK")
    if phase == "unmask" and hold:
        Path(hold + ".held").touch()
        while not Path(hold + ".go").exists():
            time.sleep(0.1)
    return _answer(self, phase, round_number, payload, global_model)


_secure_site.SecureSite.answer = _held_answer
'''


def round_metrics(plan: Plan) -> dict[tuple[str, str, str], float]:
    """Round 0's records in ``plan``'s metrics.jsonl but its timing and bytes: (origin, task, metric) -> value."""
    records = read_metrics(plan.resolve_path(plan.model.aggregator.settings.metrics_path))
    return {(r.origin, r.task, r.metric): r.value for r in records if r.round == 0 and r.task != "round"}


def test_a_kill_9_of_the_aggregator_during_unmask_resumes_the_round(tmp_path: Path) -> None:
    once = {"aggregator.settings.final_validation": False}
    patient = {"network.settings.connect_timeout_seconds": 900.0}
    reference = workspace(tmp_path / "plain", 3, None, **once)
    secure = workspace(tmp_path / "secure", 3, {}, **once, **patient)
    (secure.workspace / "src" / "hanging_runner.py").write_text(HOLDING)
    same_init(reference, secure)
    sites = Sites(reference)
    try:
        for name in ("aggregator", "collaborator1", "collaborator2", "collaborator3"):
            sites.start(name)
        assert set(sites.wait_all(timeout=300).values()) == {0}, sites.log("aggregator")
    finally:
        sites.close()

    hold = tmp_path / "collaborator3-unmask"
    sites = Sites(secure)
    try:
        sites.start("aggregator")
        for name in ("collaborator1", "collaborator2"):
            sites.start(name)
        sites.start("collaborator3", HOLD_UNMASK=str(hold))
        wait_for(Path(f"{hold}.held").exists, timeout=300, what="collaborator3 to be asked to reveal")
        for name in ("collaborator1", "collaborator2"):
            wait_for(lambda name=name: "revealed shares" in sites.log(name), timeout=120, what=f"{name} to reveal")
        time.sleep(3.0)  # their reveals reach the aggregator (one that did not is sent to the restarted one)
        sites.kill("aggregator")
        sites.start("aggregator")
        Path(f"{hold}.go").touch()
        codes = sites.wait_all(timeout=300)
    finally:
        sites.close()
    restarted = sites.log("aggregator", 2)
    assert codes == dict.fromkeys(codes, 0), restarted
    assert "round 0 resumed at phase unmask" in restarted, restarted
    memory = secure.workspace / "save" / "site-collaborator1" / "secagg.json"
    assert stat.S_IMODE(memory.stat().st_mode) == 0o600  # the site's seeds and reveals, kept across its restarts
    assert sites.log("collaborator1").count("revealed shares") == 2  # the same request, answered again
    assert_models_close(reference, secure)
    expected, got = round_metrics(reference), round_metrics(secure)
    assert ("collaborator3", "aggregated_model_validation", "accuracy") in expected and ("aggregator", "train", "loss") in expected
    assert got == pytest.approx(expected, abs=1e-6)  # the same sites' training and validations, kept through the restart
