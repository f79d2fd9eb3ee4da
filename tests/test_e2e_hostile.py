"""Hostile or broken updates against a real aggregator process: each is refused, the round goes on."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST

from accord.collaborator.site import grpc_client
from accord.errors import AccordError, RefusedError
from accord.experiment.local import fx_command, prepare_workspace
from accord.messages import Action, TaskResult
from accord.metric_records import read_metrics
from accord.tensors.digest import model_digest

pytestmark = pytest.mark.e2e


def first_float(model: dict[str, np.ndarray]) -> str:
    return next(name for name, value in model.items() if value.dtype == np.float32 and value.ndim == 2)


def hostile_results(model: dict[str, np.ndarray]) -> dict[str, tuple[TaskResult, str]]:
    """name -> (result, what the refusal must say), all claiming to be collaborator2 in round 0."""
    key = first_float(model)

    def train(tensors=None, **changes) -> TaskResult:
        fields = dict(collaborator="collaborator2", round_number=0, task="train", sample_count=100,
                      metrics={"loss": 0.5}, tensors=tensors or dict(model), is_delta=False, task_seconds=1.0,
                      model_digest=model_digest(model, 0))
        return TaskResult(**{**fields, **changes})

    def replaced(value: np.ndarray) -> dict[str, np.ndarray]:
        return {**model, key: value}

    renamed = {("renamed" if name == key else name): value for name, value in model.items()}
    shape = ", ".join(str(d) for d in model[key].shape)
    return {
        "wrong name": (train(renamed), "renamed"),
        "wrong shape": (train(replaced(np.zeros((3, 3), np.float32))), f"is float32[3, 3], expected float32[{shape}]"),
        "wrong dtype": (train(replaced(model[key].astype(np.float64))), f"is float64[{shape}], expected float32[{shape}]"),
        "NaN": (train(replaced(np.full_like(model[key], np.nan))), "NaN or Inf"),
        "Inf": (train(replaced(np.full_like(model[key], np.inf))), "NaN or Inf"),
        "no samples": (train(sample_count=0), "sample count 0"),
        "absurd samples": (train(sample_count=10**15), "sample count 1000000000000000"),
        "NaN metric": (train(metrics={"loss": float("nan")}), "metric 'loss' is nan"),
        "task not assigned": (train(task="steal_weights"), "was not assigned"),
        "another round": (train(round_number=7), "current round is 0"),
        "another round's model": (train(model_digest=model_digest(model, 1)), "computed from another model"),
        "no model digest": (train(model_digest=""), "computed from another model"),
    }


def test_each_hostile_update_is_refused_and_the_round_goes_on(tmp_path: Path) -> None:
    plan = prepare_workspace(tmp_path / "ws", collaborators=2, rounds=1, overrides=FAST)
    ws = plan.workspace
    aggregator = subprocess.Popen(
        fx_command("aggregator", "start", "-w", str(ws)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    refusals: dict[str, str] = {}
    try:
        with grpc_client(plan, "collaborator2", connect_timeout=60) as client:
            client.join()
            assignment = client.get_tasks()
            assert assignment.action is Action.RUN and assignment.round_number == 0
            model = client.get_model(0)
            for name, (result, reason) in hostile_results(model).items():
                with pytest.raises(RefusedError) as refused:
                    client.send_result(result)
                assert refused.value.kind in ("payload", "state"), name
                assert reason in refused.value.message, (name, refused.value.message)
                refusals[name] = reason
            honest = TaskResult(
                "collaborator2", 0, "aggregated_model_validation", 50, {"accuracy": 0.5}, None, False, 0.1,
                model_digest=model_digest(model, 0),
            )
            client.send_result(honest)
            with pytest.raises(RefusedError, match="already received"):
                client.send_result(honest)
            oversized = TaskResult(
                "collaborator2", 0, "train", 100, {}, {**model, "huge": np.zeros(1 << 20, np.float32)}, False, 1.0,
                model_digest=model_digest(model, 0),
            )
            client._chunk_bytes = 8 << 20  # one 4 MiB message, over the plan's 1 MiB chunk limit (+1 MiB)
            with pytest.raises(AccordError, match="RESOURCE_EXHAUSTED"):
                client.send_result(oversized)
        processes = [
            subprocess.Popen(fx_command("collaborator", "start", "-n", name, "-w", str(ws)), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            for name in ("collaborator1", "collaborator2")
        ]
        assert [p.wait(timeout=180) for p in processes] == [0, 0]
        out, _ = aggregator.communicate(timeout=60)
    finally:
        if aggregator.poll() is None:
            aggregator.kill()
    assert aggregator.returncode == 0, out
    for reason in refusals.values():
        assert reason in out, f"the aggregator did not log: {reason}"
    records = read_metrics(ws / "logs" / "metrics.jsonl")
    validations = [r for r in records if r.origin == "collaborator2" and r.round == 0 and r.task == "aggregated_model_validation"]
    assert [r.value for r in validations] == [0.5]  # the duplicate was not counted
    assert not any(r.metric == "loss" and r.value != r.value for r in records)
    assert {r.round for r in records if r.origin == "collaborator2" and r.task == "train"} == {0}
