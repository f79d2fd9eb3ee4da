"""Flower 1.42's simulation of bench/_digits_workload.py (run by Flower's own venv, from
bench/simulation.py): FedAvg over every one of ``--clients`` supernodes each round (fit and
evaluate), on Flower's Ray backend with ``--num-cpus`` CPUs per client (default 1: as many Ray actors
as cores; Flower's own default is 2). Prints one JSON line: the
seconds of each round (from configure_fit to the end of aggregate_evaluate) and its start
and end (Unix time, so the bench can read the CPU time spent in it)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _digits_workload as work
from flwr.client import ClientApp, NumPyClient
from flwr.common import Context, ndarrays_to_parameters
from flwr.server import ServerApp, ServerAppComponents, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.simulation import run_simulation


class DigitsClient(NumPyClient):
    def __init__(self, cid: int) -> None:
        self.cid = cid

    def fit(self, parameters, config):
        weights, samples, loss = work.fit(parameters, self.cid)
        return weights, samples, {"loss": loss}

    def evaluate(self, parameters, config):
        samples, loss, accuracy = work.evaluate(parameters, self.cid)
        return loss, samples, {"accuracy": accuracy}


class TimedFedAvg(FedAvg):
    """FedAvg that notes when each round starts and ends."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.starts: dict[int, float] = {}
        self.ends: dict[int, float] = {}
        self.accuracy: dict[int, float] = {}

    def configure_fit(self, server_round, parameters, client_manager):
        self.starts[server_round] = time.time()
        return super().configure_fit(server_round, parameters, client_manager)

    def aggregate_evaluate(self, server_round, results, failures):
        out = super().aggregate_evaluate(server_round, results, failures)
        total = sum(r.num_examples for _, r in results)
        self.accuracy[server_round] = sum(r.metrics["accuracy"] * r.num_examples for _, r in results) / max(total, 1)
        self.ends[server_round] = time.time()
        return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--num-cpus", type=float, default=1.0)
    args = parser.parse_args()
    n = args.clients
    strategy = TimedFedAvg(
        fraction_fit=1.0,
        fraction_evaluate=1.0,
        min_fit_clients=n,
        min_evaluate_clients=n,
        min_available_clients=n,
        initial_parameters=ndarrays_to_parameters(work.initial_weights()),
    )

    def server_fn(context: Context) -> ServerAppComponents:
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=args.rounds))

    def client_fn(context: Context):
        return DigitsClient(int(context.node_config["partition-id"]) + 1).to_client()

    started = time.perf_counter()
    run_simulation(
        server_app=ServerApp(server_fn=server_fn),
        client_app=ClientApp(client_fn=client_fn),
        num_supernodes=n,
        backend_config={"client_resources": {"num_cpus": args.num_cpus, "num_gpus": 0.0}},
    )
    rounds = [strategy.ends[r] - strategy.starts[r] for r in sorted(strategy.ends)]
    windows = [[strategy.starts[r], strategy.ends[r]] for r in sorted(strategy.ends)]
    accuracy = [strategy.accuracy[r] for r in sorted(strategy.accuracy)]
    print(json.dumps({"framework": "flower", "clients": n, "round_seconds": rounds, "round_windows": windows,
                      "accuracy": accuracy,
                      "wall_seconds": time.perf_counter() - started}), flush=True)


if __name__ == "__main__":
    main()
