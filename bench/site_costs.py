"""What the site's new work costs, as ratios to a baseline measured in the same run.

1. FedProx's proximal term: one local epoch of the torch runner and of the Keras runner
   (its default backend) on a digits shard with proximal_mu = 0.01, against the same epoch
   of a runner that trains without it (FedAvg).
2. The client mods on a ~50 MB model (float32): ClipUpdate (two passes over the update)
   and LocalGaussianNoise, each against one copy of the model (np.copy of every tensor).

    .venv/bin/python bench/site_costs.py [--repeats 5] [--model-mb 50]

Each figure is repeated; min and median are printed.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np


def timed(call: Callable[[], object], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return times


def show(name: str, times: list[float], base: list[float]) -> None:
    ratio = statistics.median(times) / statistics.median(base)
    print(f"{name:<34} min {min(times) * 1e3:9.1f} ms  median {statistics.median(times) * 1e3:9.1f} ms  x{ratio:5.2f} of baseline")


def fedprox(repeats: int) -> None:
    import torch

    from accord.data.builtin import DigitsDataLoader
    from accord.runners.torch_runner import TorchTaskRunner

    torch.set_num_threads(1)
    data = DigitsDataLoader(data_path=1, collaborator_count=2, batch_size=32)
    runner = TorchTaskRunner("accord.runners.torch_models.mlp", model_kwargs={"in_features": 64, "hidden": 128, "num_classes": 10})
    start = runner.get_weights()

    def epoch(mu: float) -> Callable[[], object]:
        def run() -> object:
            runner.set_weights(start)
            return runner.train(data, epochs=1, proximal_mu=mu)

        return run

    epoch(0.0)()  # warm up
    base = timed(epoch(0.0), repeats)
    show("torch epoch, FedAvg (baseline)", base, base)
    show("torch epoch, FedProx mu=0.01", timed(epoch(0.01), repeats), base)


def fedprox_keras(repeats: int) -> None:
    import keras

    from accord.data.builtin import DigitsDataLoader
    from accord.runners.keras_runner import KerasTaskRunner

    def net() -> keras.Model:
        inputs = keras.Input(shape=(64,))
        x = keras.layers.Dense(128, activation="relu")(inputs)
        x = keras.layers.Dense(128, activation="relu")(x)
        return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))

    data = DigitsDataLoader(data_path=1, collaborator_count=2, batch_size=32)
    plain, prox = KerasTaskRunner(net()), KerasTaskRunner(net())  # the first never installs the term

    def epoch(runner: KerasTaskRunner, mu: float) -> Callable[[], object]:
        start = runner.get_weights()

        def run() -> object:
            runner.set_weights(start)
            return runner.train(data, epochs=1, proximal_mu=mu)

        return run

    epoch(plain, 0.0)()
    epoch(prox, 0.01)()  # warm up (traces)
    base = timed(epoch(plain, 0.0), repeats)
    show(f"keras ({keras.backend.backend()}) epoch, FedAvg (baseline)", base, base)
    show("keras epoch, FedProx mu=0.01", timed(epoch(prox, 0.01), repeats), base)


def mods(repeats: int, model_mb: int) -> None:
    from accord.collaborator.executor import read_only
    from accord.messages import Task, TaskResult
    from accord.mods import ClipUpdate, Instruction, LocalGaussianNoise

    rng = np.random.default_rng(0)
    per = model_mb * 1024 * 1024 // 4 // 8
    global_model = {f"layer{i}": rng.standard_normal(per, dtype=np.float32) for i in range(8)}
    trained = {k: v + np.float32(0.01) for k, v in global_model.items()}
    instruction = Instruction("site", 0, Task("train", "train"), read_only(global_model), "d")

    def reply(_: Instruction) -> TaskResult:
        return TaskResult("site", 0, "train", 1, {}, tensors=trained)

    base = timed(lambda: {k: np.copy(v) for k, v in trained.items()}, repeats)
    show(f"copy of a {model_mb} MB model (baseline)", base, base)
    show("ClipUpdate (clipping)", timed(lambda: ClipUpdate(1e-3)(instruction, reply), repeats), base)
    show("LocalGaussianNoise (seeded)", timed(lambda: LocalGaussianNoise(0.01, seed=1, seed_for_tests_only=True)(instruction, reply), repeats), base)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model-mb", type=int, default=50)
    args = parser.parse_args()
    fedprox(args.repeats)
    fedprox_keras(args.repeats)
    mods(args.repeats, args.model_mb)


if __name__ == "__main__":
    main()
