"""A result belongs to one round's model: a captured real result replayed later is refused
by a real aggregator process over mutual TLS, from its header, with a logged reason."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest
from conftest import FAST

from accord.collaborator.site import build_collaborator, grpc_client
from accord.errors import RefusedError
from accord.experiment.local import fx_command, prepare_workspace
from accord.messages import Action
from accord.tensors.digest import model_digest

pytestmark = pytest.mark.e2e


def test_a_captured_result_replayed_into_a_later_round_is_refused(tmp_path: Path) -> None:
    plan = prepare_workspace(tmp_path / "ws", collaborators=2, rounds=2, overrides=FAST)
    ws = plan.workspace
    aggregator = subprocess.Popen(
        fx_command("aggregator", "start", "-w", str(ws)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    other = subprocess.Popen(
        fx_command("collaborator", "start", "-n", "collaborator1", "-w", str(ws)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    refusals: dict[str, str] = {}
    try:
        with grpc_client(plan, "collaborator2", connect_timeout=60) as client:
            site = build_collaborator(plan, "collaborator2", client)
            client.join()
            first = client.get_tasks()
            assert first.action is Action.RUN and first.round_number == 0
            captured = {}
            for task in first.tasks:  # honest round-0 results, as this site really computed them
                captured[task.name] = site.run_task(0, task)
                client.send_result(captured[task.name])
            model = client.get_model(0)
            assert captured["train"].model_digest == model_digest(model, 0)
            assert captured["aggregated_model_validation"].model_digest == model_digest(model, 0)  # validation too
            second = client.get_tasks()  # round 1 opens once collaborator1 reported
            while second.action is Action.WAIT and other.poll() is None:  # a long poll that ended first: ask again, as a site does
                second = client.get_tasks()
            assert second.action is Action.RUN and second.round_number == 1
            replays = {
                "train as round 1": dataclasses.replace(captured["train"], round_number=1),
                "validation as round 1": dataclasses.replace(captured["aggregated_model_validation"], round_number=1),
                "train as round 0": captured["train"],
            }
            for name, replay in replays.items():
                with pytest.raises(RefusedError) as refused:
                    client.send_result(replay)
                refusals[name] = refused.value.message
            assert site.run() >= 1  # the honest site then works through the remaining rounds
        assert other.wait(timeout=180) == 0
        out, _ = aggregator.communicate(timeout=60)
    finally:
        for process in (aggregator, other):
            if process.poll() is None:
                process.kill()
    assert aggregator.returncode == 0, out
    for name in ("train as round 1", "validation as round 1"):  # refused by digest, before any tensor
        assert "the aggregator refused" in refusals[name] and "computed from another model" in refusals[name], name
        assert "a replayed or stale result, dropped" in refusals[name]
    assert "came after that round closed" in refusals["train as round 0"]
    assert out.count("refused result from collaborator2: result from collaborator2 for 'train' of round 1 was computed from another model") == 1
    assert "refused result from collaborator2: result from collaborator2 for 'aggregated_model_validation' of round 1 was computed from another model" in out
    assert "refused result from collaborator2: result from collaborator2 for 'train' of round 0 came after that round closed" in out
