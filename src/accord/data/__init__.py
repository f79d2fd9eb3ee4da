"""Data loaders: built-in datasets, sharding (IID, Dirichlet), users' own .npz files."""

from accord.data.base import DataLoader

__all__ = ["DataLoader"]
