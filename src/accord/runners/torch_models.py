"""Small example torch models (for tests, benchmarks and quick starts)."""

from __future__ import annotations

from torch import nn


class MLP(nn.Module):
    """A fully connected classifier: ``depth`` hidden ReLU layers of width ``hidden``."""

    def __init__(
        self, in_features: int = 64, hidden: int = 128, num_classes: int = 10, depth: int = 2
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for _ in range(max(int(depth), 0)):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


def mlp(in_features: int = 64, hidden: int = 128, num_classes: int = 10, depth: int = 2) -> MLP:
    """An :class:`MLP` (the factory a plan can name: ``accord.runners.torch_models.mlp``)."""
    return MLP(in_features, hidden, num_classes, depth)
