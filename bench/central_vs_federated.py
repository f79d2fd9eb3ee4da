"""Federated vs central accuracy on digits, same model, same number of epochs.

Runs the quickstart federation (aggregator + N collaborator processes over mutual TLS)
and trains the same MLP centrally on the whole training split for rounds x epochs
epochs; evaluates both final models on the same validation split and prints the ratio.

    .venv/bin/python bench/central_vs_federated.py [--collaborators 3] [--rounds 10]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np


def accuracy(runner, x: np.ndarray, y: np.ndarray) -> float:
    from accord.data.arrays import ArrayDataLoader

    data = ArrayDataLoader(x[:1], y[:1], x, y, batch_size=256, num_classes=10)
    return runner.validate(data).metrics["accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collaborators", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()

    from accord.data.arrays import ArrayDataLoader
    from accord.data.builtin import load_full
    from accord.experiment.local import prepare_workspace, run_processes
    from accord.runners.from_plan import build_runner
    from accord.tensors.state import load_state

    workspace = Path(tempfile.mkdtemp(prefix="accord-bench-")) / "ws"
    plan = prepare_workspace(workspace, args.collaborators, args.rounds)
    report = run_processes(plan)
    assert report.ok, report.returncodes
    loader = plan.model.data_loader.settings
    xt, yt, xv, yv = load_full("digits", valid_fraction=loader["valid_fraction"], seed=loader["seed"])

    federated = build_runner(plan)
    federated.set_weights(load_state(plan.resolve_path(plan.model.aggregator.settings.last_state_path)), with_optimizer=False)
    fed_acc = accuracy(federated, xv, yv)

    epochs = args.rounds * int(plan.model.tasks.settings["train"].kwargs.get("epochs", 1))
    central = build_runner(plan)
    central.train(ArrayDataLoader(xt, yt, xv, yv, batch_size=loader["batch_size"], num_classes=10), epochs=epochs)
    central_acc = accuracy(central, xv, yv)

    reported = report.aggregated("aggregated_model_validation/accuracy")
    print(f"collaborators={args.collaborators} rounds={args.rounds} epochs(central)={epochs} validation samples={len(yv)}")
    print(f"federated final model accuracy : {fed_acc:.4f}")
    print(f"federated best reported (round): {max(reported):.4f}")
    print(f"central accuracy               : {central_acc:.4f}")
    print(f"ratio federated/central        : {fed_acc / central_acc:.4f}")
    print(f"federation wall time           : {report.seconds:.1f} s")


if __name__ == "__main__":
    main()
