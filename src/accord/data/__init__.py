"""Data loaders: built-in datasets, sharding (IID, Dirichlet), users' own .npz, CSV files and image folders.

Importing this package needs NumPy alone; scikit-learn is imported when a built-in set
is first loaded, Pillow when an image folder is.
"""

from accord.data.arrays import ArrayDataLoader
from accord.data.base import DataLoader
from accord.data.builtin import BreastCancerDataLoader, DigitsDataLoader, load_full
from accord.data.csv_file import CSVDataLoader
from accord.data.image_folder import ImageFolderDataLoader
from accord.data.npz import NpzDataLoader
from accord.data.sharding import shard_indices, split_indices, split_train_valid

__all__ = [
    "ArrayDataLoader",
    "BreastCancerDataLoader",
    "CSVDataLoader",
    "DataLoader",
    "DigitsDataLoader",
    "ImageFolderDataLoader",
    "NpzDataLoader",
    "load_full",
    "shard_indices",
    "split_indices",
    "split_train_valid",
]
