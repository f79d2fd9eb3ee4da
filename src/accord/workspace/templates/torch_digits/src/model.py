"""The workspace's model: a small MLP for the 8x8 digits (64 features, 10 classes)."""

from torch import nn


def build_model(in_features: int = 64, hidden: int = 128, num_classes: int = 10) -> nn.Module:
    """Two hidden layers with ReLU; every participant builds it with the plan's seed."""
    return nn.Sequential(
        nn.Linear(in_features, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )
