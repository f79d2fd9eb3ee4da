"""ImageFolderDataLoader: a site's folder of images, one sub-folder per class, from the plan alone.

Pillow (the extra ``accord[images]``) is imported when a loader is built. Each image is
decoded (a JPEG at reduced scale when that still covers ``image_size``: Pillow's draft
mode), converted to L or RGB (8 bits a channel, divided by 255) or, for a 16-bit or 32-bit
grayscale image, scaled to [0, 1] by its depth; resized and written into its place in one
float32 array made beforehand: the loader holds samples x channels x H x W x 4 bytes (at
most MAX_ARRAY_BYTES, checked before any image is decoded), plus one decoded image at a time.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from accord.data.arrays import ArrayDataLoader
from accord.data.settings import check_names, check_seed, check_type, class_index
from accord.data.sharding import split_indices
from accord.errors import AccordError
from accord.imports import optional_module

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
SPLIT_FOLDERS: tuple[str, str] = ("train", "valid")
_READ_FIX = "replace or remove the file (or leave its extension out of data_loader.settings.extensions)"
#: Pillow modes of 8 bits per channel, converted to L or RGB and divided by 255
_EIGHT_BIT = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"})
#: 16-bit grayscale modes, divided by 65535
_SIXTEEN_BIT = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_DEEP_FIX = "save it as 8-bit grayscale or RGB(A), or 16-bit grayscale"
#: the longest side image_size may give (or the first image may have without it)
MAX_SIDE = 8192
#: the most bytes the loader's float32 arrays may take together
MAX_ARRAY_BYTES = 32 * 2**30


class ImageFolderDataLoader(ArrayDataLoader):
    """The images under ``data_path``: ``<class>/<image>`` files, or ``train/<class>/...`` and
    ``valid/<class>/...`` for a split of the site's own choosing (``valid_fraction`` is then unused).

    Samples are (channels, H, W) float32: ``(pixel / 255 - mean) / std`` per channel (one
    channel with ``grayscale``, else three, RGB; a 16-bit pixel is divided by 65535 instead,
    and a grayscale one fills all three). ``image_size``: ``[H, W]`` every image is resized to
    (bilinear), each side at most MAX_SIDE; ``None``: every image must have the first training
    image's size. ``mean`` and ``std``: one number, or one per channel (default 0 and 1:
    pixels in [0, 1]); both, and the pixels they normalize, must stay within float32's range.
    ``classes``: the class folder names in index order (the same at every site, as the plan
    is); ``None``: this site's sorted class folder names, which number alike at every site
    only if every site has every class folder. ``valid_fraction`` and ``seed``: the stratified split of a
    folder without ``train/`` and ``valid/``. ``extensions``: the image files read (case does
    not matter); other files and hidden ones are skipped, and so are deeper folders.
    """

    def __init__(
        self,
        data_path: str,
        image_size: list[int] | None = None,
        grayscale: bool = False,
        mean: float | list[float] = 0.0,
        std: float | list[float] = 1.0,
        classes: list[str | int] | None = None,
        valid_fraction: float = 0.2,
        seed: int = 0,
        extensions: list[str] | None = None,
        batch_size: int = 32,
    ) -> None:
        image = optional_module("PIL.Image", "ImageFolderDataLoader", "install the images extra: pip install 'accord[images]' (Pillow)")
        check_type("grayscale", grayscale, bool, "true or false")
        check_type("valid_fraction", valid_fraction, (int, float), "a number between 0 and 1 (e.g. 0.2)")
        check_seed(seed)
        self.data_path = str(data_path)
        self.mode = "L" if grayscale else "RGB"
        channels = 1 if grayscale else 3
        self.mean = _per_channel("mean", mean, channels)
        self.std = _per_channel("std", std, channels)
        if not (self.std > 0).all():
            raise AccordError(f"data_loader.settings.std is {std!r}; every value must be > 0", "set data_loader.settings.std to e.g. 0.5")
        with np.errstate(over="ignore"):  # an overflow is refused below
            extremes = (np.array([[0.0], [1.0]], dtype=np.float32) - self.mean) / self.std
        if not (np.isfinite(extremes).all() and np.isfinite(self.std).all()):
            raise AccordError(
                f"data_loader.settings.mean {mean!r:.40} and std {std!r:.40}: they, or pixels in [0, 1] normalized by them, are beyond float32's range",
                "set data_loader.settings.mean and std to pixel-scale values, e.g. mean 0.5 and std 0.25",
            )
        suffixes = _extensions(extensions)
        root = Path(self.data_path).expanduser()
        parts = _listing(root, suffixes)
        index = class_index(classes)
        if index is None:  # the first part's (train/'s) class folders, sorted
            index = {name: at for at, name in enumerate(sorted(parts[0]))}
        self.classes = list(index)
        folder = {part: root / part if len(parts) == 2 else root for part in SPLIT_FOLDERS}
        files = {part: _labelled(classes_found, index, folder[part]) for part, classes_found in zip(SPLIT_FOLDERS, parts)}
        if len(parts) == 1:  # one folder of classes: this site's seeded, stratified split
            paths, labels = files["train"]
            train, valid = split_indices(labels, valid_fraction, seed)
            if not len(valid):
                raise AccordError(
                    f"data folder {root} has {len(paths)} images: too few for a training and a validation split",
                    "give the site more images (at least two of a class), or change data_loader.settings.valid_fraction",
                )
            files = {"train": ([paths[i] for i in train], labels[train]), "valid": ([paths[i] for i in valid], labels[valid])}
        self._reference = files["train"][0][0]  # the image whose size every other must have without image_size
        self.image_size = _size(image_size, image, self._reference)
        self._resize = image_size is not None
        _check_bytes(sum(len(paths) for paths, _labels in files.values()), channels, self.image_size)
        arrays = {part: self._pixels(image, paths) for part, (paths, _labels) in files.items()}
        super().__init__(
            arrays["train"],
            files["train"][1],
            arrays["valid"],
            files["valid"][1],
            batch_size=batch_size,
            num_classes=len(index),
        )

    def _pixels(self, image: Any, paths: list[Path]) -> np.ndarray:
        """The images at ``paths``, resized and normalized, as one (n, channels, H, W) float32 array."""
        height, width = self.image_size
        out = np.empty((len(paths), len(self.mean), height, width), dtype=np.float32)
        for at, path in enumerate(paths):
            try:
                with image.open(path) as raw:
                    raw.draft(self.mode, (width, height))
                    if raw.mode in _EIGHT_BIT:
                        picture, scale = raw.convert(self.mode), 255.0
                    else:  # deeper pixels, already scaled to [0, 1], resized as floats
                        picture, scale = image.fromarray(_deep_pixels(raw, path), "F"), 1.0
                    if picture.size != (width, height) and not self._resize:
                        raise AccordError(
                            f"image {path} is {picture.size[1]}x{picture.size[0]} pixels, but {self._reference} is {height}x{width}",
                            "set data_loader.settings.image_size to [height, width] to resize every image",
                        )
                    if picture.size != (width, height):
                        picture = picture.resize((width, height), image.Resampling.BILINEAR)
                    pixels = np.asarray(picture, dtype=np.float32) / np.float32(scale)
            except (OSError, ValueError, SyntaxError, image.DecompressionBombError) as exc:
                raise AccordError(f"image {path} cannot be read: {exc}", _READ_FIX) from None
            out[at] = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)  # one channel fills RGB's three
        out -= self.mean[:, None, None]
        out /= self.std[:, None, None]
        return out


def _deep_pixels(raw: Any, path: Path) -> np.ndarray:
    """A 16-bit or 32-bit grayscale image's pixels as float32 in [0, 1]: I;16 divided by 65535; I
    (32-bit integers) taken as 16-bit data, 0..65535, divided by 65535; F (floats) as they are,
    which must lie in [0, 1]. Any other mode is refused."""
    if raw.mode not in _SIXTEEN_BIT | {"I", "F"}:
        raise AccordError(f"image {path} has the Pillow mode {raw.mode!r}, which the loader does not read", _DEEP_FIX)
    values = np.asarray(raw)
    low, high = (values.min(), values.max()) if values.size else (0, 0)
    if raw.mode == "F":
        if not (np.isfinite(values).all() and low >= 0.0 and high <= 1.0):
            raise AccordError(
                f"image {path} has floating-point pixels from {low:.6g} to {high:.6g}; they must lie in [0, 1]",
                f"scale them to [0, 1], or {_DEEP_FIX}",
            )
        return values.astype(np.float32)
    if raw.mode == "I" and not (low >= 0 and high <= 65535):
        raise AccordError(f"image {path} has 32-bit integer pixels from {low} to {high}; only 16-bit values (0..65535) are read", _DEEP_FIX)
    return values.astype(np.float32) / np.float32(65535.0)


def _check_bytes(count: int, channels: int, size: tuple[int, int]) -> None:
    """Refuse, before any image is decoded, arrays that would take more than MAX_ARRAY_BYTES."""
    need = count * channels * size[0] * size[1] * 4
    if need > MAX_ARRAY_BYTES:
        raise AccordError(
            f"{count:,} images of {channels}x{size[0]}x{size[1]} float32 pixels need {need / 2**30:,.1f} GiB,"
            f" past the loader's limit of {MAX_ARRAY_BYTES / 2**30:g} GiB",
            "set data_loader.settings.image_size smaller (e.g. [224, 224]) or grayscale: true, or give the site fewer images",
        )


def _listing(root: Path, suffixes: tuple[str, ...]) -> list[dict[str, list[Path]]]:
    """``[{class folder: its image files}]``: one mapping, or two (``train/``, ``valid/``)."""
    if not root.is_dir():
        raise AccordError(
            f"data folder {root} does not exist (or is not a folder)",
            "set this collaborator's data path in plan/data.yaml to its image folder (one sub-folder per class)",
        )
    top = _folders(root)
    if set(SPLIT_FOLDERS) <= set(top):
        others = sorted(set(top) - set(SPLIT_FOLDERS))
        if others:
            raise AccordError(
                f"data folder {root} has train/ and valid/ and also {others[0]}/",
                "put every class folder under train/ and valid/, or use no train/ and valid/ at all",
            )
        return [_classes(root / part, suffixes) for part in SPLIT_FOLDERS]
    return [_classes(root, suffixes)]


def _folders(root: Path) -> list[str]:
    """The names of ``root``'s sub-folders, sorted, hidden ones left out."""
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _classes(folder: Path, suffixes: tuple[str, ...]) -> dict[str, list[Path]]:
    """``{class folder: its image files, sorted}``; a folder with none is refused."""
    names = _folders(folder)
    if not names:
        raise AccordError(f"data folder {folder} has no class sub-folders", "put each class's images in a sub-folder named for the class")
    found: dict[str, list[Path]] = {}
    for name in names:
        files = sorted(
            p for p in (folder / name).iterdir() if p.suffix.lower() in suffixes and not p.name.startswith(".") and p.is_file()
        )
        if not files:
            raise AccordError(
                f"class folder {folder / name} has no images ({', '.join(suffixes)})",
                "add its images, remove the folder, or add their extension to data_loader.settings.extensions",
            )
        found[name] = files
    return found


def _labelled(folders: dict[str, list[Path]], index: dict[str, int], root: Path) -> tuple[list[Path], np.ndarray]:
    """Every image of ``folders`` (class folders of ``root``) and its class index."""
    paths: list[Path] = []
    labels: list[int] = []
    for name, files in folders.items():
        if name not in index:
            raise AccordError(
                f"data folder {root}: the class folder {name!r} is not one of the classes ({', '.join(map(repr, index))})",
                "rename or remove the folder, or add the class to data_loader.settings.classes in the federation's plan",
            )
        paths += files
        labels += [index[name]] * len(files)
    return paths, np.array(labels, dtype=np.int64)


def _size(image_size: Any, image: Any, reference: Path) -> tuple[int, int]:
    """``(H, W)`` from the plan, or the ``reference`` image's when it gives none; each side <= MAX_SIDE."""
    if image_size is None:
        try:
            with image.open(reference) as first:
                width, height = first.size
        except (OSError, ValueError, SyntaxError, image.DecompressionBombError) as exc:
            raise AccordError(f"image {reference} cannot be read: {exc}", _READ_FIX) from None
        if max(width, height) > MAX_SIDE:
            raise AccordError(
                f"image {reference} is {height}x{width} pixels, larger than {MAX_SIDE} on a side",
                "set data_loader.settings.image_size to [height, width] to resize every image (e.g. [224, 224])",
            )
        return int(height), int(width)
    ok = isinstance(image_size, (list, tuple)) and len(image_size) == 2
    if not ok or not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_SIDE for v in image_size):
        raise AccordError(
            f"data_loader.settings.image_size is {image_size!r:.40}; it must be [height, width] in pixels, each 1 to {MAX_SIDE}",
            "set data_loader.settings.image_size to e.g. [32, 32]",
        )
    return int(image_size[0]), int(image_size[1])


def _per_channel(setting: str, value: Any, channels: int) -> np.ndarray:
    """``mean`` or ``std``: one number or one per channel, as a (channels,) float32 array."""
    values = [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else value
    ok = isinstance(values, (list, tuple)) and len(values) in (1, channels)
    if not ok or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        raise AccordError(
            f"data_loader.settings.{setting} is {value!r:.40}; it must be a number or a list of {channels} (one per channel)",
            f"set data_loader.settings.{setting} to e.g. {[0.5] * channels}",
        )
    with np.errstate(over="ignore"):  # past float32's range: inf, refused with the std
        return np.broadcast_to(np.asarray(values, dtype=np.float32), (channels,)).copy()


def _extensions(extensions: Any) -> tuple[str, ...]:
    """The plan's extensions, lower case with their dot (default: IMAGE_EXTENSIONS)."""
    names = check_names("extensions", extensions)
    if names is None:
        return IMAGE_EXTENSIONS
    if not names:
        raise AccordError("data_loader.settings.extensions is empty", "list the image extensions, e.g. [.png, .jpg], or null")
    return tuple(("" if n.startswith(".") else ".") + n.lower() for n in names)
