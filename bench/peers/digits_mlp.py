"""The peers' half of the workload: the digits MLP, one site's shard, local training, accuracy.

Copied unchanged into each peer's generated workspace or app (it imports torch and NumPy
alone), so OpenFL and Flower train exactly what Accord's torch_digits template trains: the
64-128-128-10 ReLU MLP, Adam with a fresh optimizer each round (opt_treatment RESET),
cross-entropy, ``epochs`` local epochs in shuffled batches. The bench writes every site's
shard, the held-out split and the initial weights as .npz files (from Accord's own split of
scikit-learn's digits), so every framework reads the same data and starts from one model.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

#: the MLP's tensor names, in order (nn.Sequential's state_dict keys)
NAMES = ("0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias")


def build_mlp(in_features: int = 64, hidden: int = 128, num_classes: int = 10) -> nn.Module:
    """The torch_digits template's MLP."""
    torch.set_num_threads(1)
    return nn.Sequential(
        nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
    )


def load_npz(path: str) -> dict[str, np.ndarray]:
    """Every array of an .npz file (no pickles)."""
    with np.load(path, allow_pickle=False) as arrays:
        return {name: arrays[name] for name in arrays.files}


def get_weights(net: nn.Module) -> list[np.ndarray]:
    """The model's tensors as float32 arrays, in :data:`NAMES` order."""
    state = net.state_dict()
    return [state[name].detach().cpu().numpy().copy() for name in NAMES]


def set_weights(net: nn.Module, weights: list[np.ndarray]) -> None:
    """Load tensors given in :data:`NAMES` order."""
    net.load_state_dict({name: torch.as_tensor(np.asarray(w, dtype=np.float32)) for name, w in zip(NAMES, weights)})


def train_epoch(net: nn.Module, optimizer: torch.optim.Optimizer, x: np.ndarray, y: np.ndarray, batch_size: int, rng: np.random.Generator) -> float:
    """One epoch in batches shuffled by ``rng``; the epoch's mean loss."""
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.int64)
    order = torch.as_tensor(rng.permutation(len(yt)))
    net.train()
    loss_sum = 0.0
    for start in range(0, len(yt), batch_size):
        idx = order[start : start + batch_size]
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(net(xt[idx]), yt[idx])
        loss.backward()
        optimizer.step()
        loss_sum += float(loss.detach()) * len(idx)
    return loss_sum / max(len(yt), 1)


def train(net: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, batch_size: int, lr: float, rng: np.random.Generator) -> float:
    """``epochs`` epochs of a fresh Adam; the last epoch's mean loss."""
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    loss = 0.0
    for _ in range(epochs):
        loss = train_epoch(net, optimizer, x, y, batch_size, rng)
    return loss


def accuracy(net: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy on (x, y)."""
    net.eval()
    with torch.no_grad():
        predicted = net(torch.as_tensor(x, dtype=torch.float32)).argmax(dim=1).numpy()
    return float((predicted == np.asarray(y)).mean()) if len(y) else 0.0
