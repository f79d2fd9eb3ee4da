"""The simulation benches' workload, the same for Accord and Flower: a torch MLP (64-128-10,
the torch_digits template's) on scikit-learn's digits; client ``cid`` (1-based) holds 16
training and 8 validation samples drawn (seeded by its number) from the train and validation
splits, trains 1 epoch in batches of 8 with SGD, and evaluates. Pure torch / NumPy (the data
file is scikit-learn's), so both frameworks' venvs import it (``sys.path`` holds bench/).

Each worker thread (an Accord worker, a Flower Ray actor) builds the model once and loads each
client's weights into it: what a client does is the same in both frameworks, and neither pays
for ``torch.manual_seed`` per client (with no GPU, torch queues every call's formatted stack
for a CUDA that never starts: about 0.3 ms a call, and memory that grows with the clients).

The SGD step is written out (``p -= LR * p.grad``: what ``torch.optim.SGD`` does with no
momentum and no weight decay) because constructing any ``torch.optim`` optimizer imports
``torch._dynamo`` (torch 2.13: ~840 modules, ~68 MB of each training process's memory and
~3.5 s of its start), which plain SGD never uses; both frameworks' processes run this same code."""

from __future__ import annotations

import functools
import importlib.util
import os
import threading

import numpy as np
import torch

TRAIN_PER_CLIENT, VALID_PER_CLIENT, BATCH, EPOCHS, LR = 16, 8, 8, 1, 0.05
torch.set_num_threads(1)
_local = threading.local()


@functools.cache
def _splits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # scikit-learn's digits file, read without importing scikit-learn (and SciPy: ~80 MB a process)
    folder = importlib.util.find_spec("sklearn").submodule_search_locations[0]  # type: ignore[union-attr]
    data = np.loadtxt(os.path.join(folder, "datasets", "data", "digits.csv.gz"), delimiter=",")
    x, y = data[:, :-1], data[:, -1].astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = (x[order] / 16.0).astype(np.float32), y[order].astype(np.int64)
    cut = int(0.8 * len(y))
    return x[:cut], y[:cut], x[cut:], y[cut:]


def shard(cid: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Client ``cid``'s (x_train, y_train, x_valid, y_valid)."""
    xt, yt, xv, yv = _splits()
    rng = np.random.default_rng(cid)
    train = rng.choice(len(yt), TRAIN_PER_CLIENT, replace=False)
    valid = rng.choice(len(yv), VALID_PER_CLIENT, replace=False)
    return xt[train], yt[train], xv[valid], yv[valid]


def build_model() -> torch.nn.Module:
    torch.random.default_generator.manual_seed(0)  # the CPU's generator alone (see the docstring)
    return torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))


def worker_model(weights: list[np.ndarray]) -> torch.nn.Module:
    """This thread's model (built once), holding ``weights``."""
    model = getattr(_local, "model", None)
    if model is None:
        model = _local.model = build_model()
    set_weights(model, weights)
    return model


def set_weights(model: torch.nn.Module, weights: list[np.ndarray]) -> None:
    with torch.no_grad():
        for param, value in zip(model.parameters(), weights):
            param.copy_(torch.tensor(np.asarray(value)))  # a copy: the arrays may be read-only views


def get_weights(model: torch.nn.Module) -> list[np.ndarray]:
    return [param.detach().numpy().copy() for param in model.parameters()]


def fit(weights: list[np.ndarray], cid: int) -> tuple[list[np.ndarray], int, float]:
    """One client's local training from ``weights``: the trained weights, samples, mean loss."""
    x, y, _, _ = shard(cid)
    model = worker_model(weights)
    params = list(model.parameters())
    xs, ys, losses = torch.from_numpy(x), torch.from_numpy(y), []
    for _ in range(EPOCHS):
        for start in range(0, len(y), BATCH):
            for param in params:
                param.grad = None
            loss = torch.nn.functional.cross_entropy(model(xs[start : start + BATCH]), ys[start : start + BATCH])
            loss.backward()
            with torch.no_grad():
                for param in params:
                    param.add_(param.grad, alpha=-LR)
            losses.append(float(loss.detach()))
    return get_weights(model), len(y), float(np.mean(losses))


def evaluate(weights: list[np.ndarray], cid: int) -> tuple[int, float, float]:
    """``weights`` on the client's validation samples: samples, loss, accuracy."""
    _, _, x, y = shard(cid)
    model = worker_model(weights)
    with torch.no_grad():
        logits = model(torch.from_numpy(x))
        loss = float(torch.nn.functional.cross_entropy(logits, torch.from_numpy(y)))
        accuracy = float((logits.argmax(1).numpy() == y).mean())
    return len(y), loss, accuracy


def initial_weights() -> list[np.ndarray]:
    return get_weights(build_model())


NAMES = ("0.weight", "0.bias", "2.weight", "2.bias")
