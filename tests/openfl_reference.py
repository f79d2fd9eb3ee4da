"""The same models as OpenFL's torch/mnist and keras/mnist workspaces, on the same data and
rounds, trained by Accord's own runners (TorchTaskRunner, KerasTaskRunner) with FedAvg in
process: the accuracy the OpenFL-runner federations are compared with."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from accord.plan.objects import use_workspace
from accord.runners.base import TaskRunner


def fedavg_accuracy(runner: TaskRunner, sites: Sequence[Any], rounds: int) -> float:
    """``rounds`` of FedAvg (each site: the global model, a fresh optimizer, one epoch; the mean
    weighted by training samples), then the final model's accuracy over every site's
    validation data (weighted by validation samples), as the aggregator reports it."""
    global_state = runner.get_weights()
    for _ in range(rounds):
        states, counts = [], []
        for site in sites:
            runner.set_weights(global_state)
            runner.reset_optimizer()
            counts.append(runner.train(site, epochs=1).sample_count)
            states.append(runner.get_weights())
        total = sum(counts)
        global_state = {
            name: (sum(s[name].astype(np.float64) * n for s, n in zip(states, counts)) / total).astype(array.dtype)
            for name, array in global_state.items()
        }
    runner.set_weights(global_state)
    outputs = [runner.validate(site) for site in sites]
    return sum(o.metrics["accuracy"] * o.sample_count for o in outputs) / sum(o.sample_count for o in outputs)


def torch_mnist_accuracy(workspace: Path, shards: Sequence[int], rounds: int) -> float:
    """OpenFL torch/mnist's DigitRecognizerCNN (Adam, lr 1e-4, cross entropy, batches of 64)
    through Accord's TorchTaskRunner on the workspace's own data shards."""
    from accord.runners.torch_runner import TorchTaskRunner

    use_workspace(workspace)
    dataloader = importlib.import_module("src.dataloader")
    cnn_model = importlib.import_module("src.cnn_model")
    sites = [dataloader.PyTorchMNISTInMemory(data_path=s, batch_size=64, collaborator_count=2) for s in shards]
    runner = TorchTaskRunner(cnn_model.DigitRecognizerCNN, optimizer={"name": "Adam", "lr": 1e-4}, loss="cross_entropy")
    return fedavg_accuracy(runner, sites, rounds)


def keras_mnist_accuracy(workspace: Path, shards: Sequence[int], rounds: int, batch_size: int) -> float:
    """OpenFL keras/mnist's CNN (its build_model: compiled with Adam and categorical cross
    entropy, one-hot labels) through Accord's KerasTaskRunner on the workspace's own shards."""
    from accord.runners.keras_runner import KerasTaskRunner

    use_workspace(workspace)
    dataloader = importlib.import_module("src.dataloader")
    taskrunner = importlib.import_module("src.taskrunner")
    sites = [dataloader.KerasMNISTInMemory(data_path=s, batch_size=batch_size, collaborator_count=2) for s in shards]
    build = taskrunner.KerasCNN.build_model
    runner = KerasTaskRunner(lambda: build(None, sites[0].feature_shape, sites[0].num_classes))
    return fedavg_accuracy(runner, sites, rounds)
