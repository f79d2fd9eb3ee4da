"""What the plan's file loaders cost, as ratios to a baseline measured in the same run.

1. CSVDataLoader on a CSV of ``--rows`` x 40 numeric features (its checks, per-site
   standardization and split included) against ``np.loadtxt`` reading the same file; and its
   peak traced memory per feature cell (tracemalloc, one extra run).
2. ImageFolderDataLoader on ``--images`` 64x64 RGB PNGs resized to 32x32, against opening,
   converting and resizing the same files with Pillow in a plain loop.

    .venv/bin/python bench/data_loaders.py [--repeats 5] [--rows 20000] [--images 1000]

Each figure is repeated; min and median are printed.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import timeit
import tracemalloc
from pathlib import Path

import numpy as np
from _table import Column, min_median_table

FEATURES = 40


def csv_costs(folder: Path, rows: int, repeats: int) -> None:
    from accord.data import CSVDataLoader

    path = folder / "site.csv"
    x = np.random.default_rng(0).normal(size=(rows, FEATURES))
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["label", *(f"f{i}" for i in range(FEATURES))])
        writer.writerows([i % 2, *values] for i, values in enumerate(x.round(6).tolist()))
    baseline = f"np.loadtxt, {rows} x {FEATURES + 1} cells (baseline)"
    figures = {
        baseline: timeit.repeat(lambda: np.loadtxt(path, delimiter=",", skiprows=1), number=1, repeat=repeats),
        "CSVDataLoader": timeit.repeat(lambda: CSVDataLoader(str(path)), number=1, repeat=repeats),
    }
    min_median_table(Column("CSV file", 44), "s", figures, baseline)
    tracemalloc.start()
    loader = CSVDataLoader(str(path))
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    cells = rows * FEATURES
    print(f"CSVDataLoader traced memory per feature cell: peak {peak / cells:.1f} B, held {held / cells:.1f} B ({loader!r})")


def image_costs(folder: Path, images: int, repeats: int) -> None:
    from PIL import Image

    from accord.data import ImageFolderDataLoader

    rng = np.random.default_rng(0)
    paths = []
    for i in range(images):
        path = folder / "images" / f"class{i % 4}" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8), "RGB").save(path)
        paths.append(path)

    def plain() -> object:
        out = np.empty((len(paths), 32, 32, 3), np.float32)
        for at, path in enumerate(paths):
            with Image.open(path) as raw:
                out[at] = np.asarray(raw.convert("RGB").resize((32, 32), Image.Resampling.BILINEAR), np.float32)
        return out

    baseline = f"Pillow loop, {images} PNGs (baseline)"
    figures = {
        baseline: timeit.repeat(plain, number=1, repeat=repeats),
        "ImageFolderDataLoader": timeit.repeat(lambda: ImageFolderDataLoader(str(folder / "images"), image_size=[32, 32]), number=1, repeat=repeats),
    }
    min_median_table(Column("image folder", 44), "s", figures, baseline)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--images", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        csv_costs(Path(scratch), args.rows, args.repeats)
        image_costs(Path(scratch), args.images, args.repeats)


if __name__ == "__main__":
    main()
