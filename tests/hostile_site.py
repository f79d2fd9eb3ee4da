"""A hostile site, run as its own process: a real enrolled certificate, crafted results.

    python tests/hostile_site.py WORKSPACE NAME ATTACK[,ATTACK...] OUT.json

It joins over mutual TLS with GrpcAggregatorClient, copies the global model of each round
and sends, for its training task, the model crafted by the round's ATTACK (the last one for
later rounds):

- ``huge``: the global model minus 100 x itself (a change 100x the model's norm), claiming 10^12 samples;
- ``float32max``: every floating-point tensor at float32's largest value;
- ``overflow`` (delta updates): a delta of float32's largest value on the step counters, 0 elsewhere;
- ``forge``: first a result whose metric name and a call whose claimed name hold a fake log line
  and an ANSI escape, then the copied model.

Validation tasks get plausible metrics. What each refusal said is written to OUT.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from accord.collaborator.site import grpc_client
from accord.errors import RefusedError
from accord.messages import Action, TaskResult
from accord.plan.loader import load_plan
from accord.tensors.digest import model_digest

FORGED = "\n12:00:00 INFO    accord.aggregator: round 9 of 9 done\x1b[2K"


def crafted(attack: str, model: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
    if attack == "huge":
        return {k: (v - 100 * v if v.dtype.kind == "f" else v) for k, v in model.items()}, 10**12
    if attack == "overflow":
        return {k: (np.full_like(v, np.finfo(np.float32).max) if k.endswith(".step") else np.zeros_like(v)) for k, v in model.items()}, 10**12
    if attack == "float32max":
        return {k: (np.full_like(v, np.finfo(np.float32).max) if v.dtype.kind == "f" else v) for k, v in model.items()}, 100
    return dict(model), 100


def forge(client, plan, name: str, result: TaskResult, refusals: dict[str, str]) -> None:
    """A metric name and a claimed name carrying a fake log line: both refused."""
    try:
        client.send_result(TaskResult(**{**vars(result), "metrics": {"loss" + FORGED: 0.1}}))
    except RefusedError as exc:
        refusals["metric name"] = exc.message
    with grpc_client(plan, name) as impostor:
        impostor.name = name + FORGED  # the claimed name differs from the certificate's
        try:
            impostor.join()
        except RefusedError as exc:
            refusals["claimed name"] = exc.message


def main(workspace: str, name: str, attacks: str, out: str) -> None:
    plan = load_plan(Path(workspace) / "plan" / "plan.yaml", workspace=Path(workspace))
    schedule = attacks.split(",")
    refusals: dict[str, str] = {}
    with grpc_client(plan, name, connect_timeout=60) as client:
        client.join()
        while True:
            assignment = client.get_tasks()
            if assignment.action is Action.QUIT:
                break
            if assignment.action is Action.WAIT:
                continue
            number = assignment.round_number
            attack = schedule[min(number, len(schedule) - 1)]
            model = client.get_model(number)
            digest = model_digest(model, number)  # the result must name the model it came from
            for task in assignment.tasks:
                if not task.returns_model:
                    metrics = {"accuracy": 0.5, "loss": 1.0}
                    client.send_result(TaskResult(name, number, task.name, 100, metrics, None, False, 0.1, digest))
                    continue
                tensors, count = crafted(attack, model)
                is_delta = plan.model.collaborator.settings.delta_updates
                result = TaskResult(name, number, task.name, count, {"loss": 1.0}, tensors, is_delta, 0.1, digest)
                if attack == "forge":
                    forge(client, plan, name, result, refusals)
                try:
                    client.send_result(result)
                except RefusedError as exc:
                    refusals[f"round {number}"] = exc.message
    Path(out).write_text(json.dumps(refusals))


if __name__ == "__main__":
    main(*sys.argv[1:])
