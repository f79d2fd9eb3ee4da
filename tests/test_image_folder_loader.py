"""ImageFolderDataLoader: class sub-folders (or train/ and valid/), resized and normalized on load,
numbered by the plan's classes; every bad input refused in one line naming the folder or image."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from accord.data import DataLoader, ImageFolderDataLoader
from accord.errors import AccordError


def gradient(value: int, size: tuple[int, int] = (6, 4)) -> np.ndarray:
    """An (H, W) uint8 image: ``value`` everywhere but the top-left pixel (0)."""
    height, width = size
    pixels = np.full((height, width), value, dtype=np.uint8)
    pixels[0, 0] = 0
    return pixels


def save(path: Path, pixels: np.ndarray, mode: str = "L") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode).save(path)
    return path


def folder(root: Path, counts: dict[str, int], size: tuple[int, int] = (6, 4)) -> Path:
    """``root/<class>/<i>.png``: class ``k`` (in sorted order) has brightness 40 * (k + 1)."""
    for k, name in enumerate(sorted(counts)):
        for i in range(counts[name]):
            save(root / name / f"{i}.png", gradient(40 * (k + 1), size))
    return root


def refused(root: Path, **settings: object) -> str:
    with pytest.raises(AccordError) as info:
        ImageFolderDataLoader(str(root), **settings)  # type: ignore[arg-type]
    assert info.value.fix and "\n" not in str(info.value)
    return str(info.value)


def everything(loader: ImageFolderDataLoader) -> tuple[np.ndarray, np.ndarray]:
    batches = [*loader.train_batches(0), *loader.valid_batches()]
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def test_class_folders_resized_split_and_numbered_by_sorted_names(tmp_path: Path) -> None:
    root = folder(tmp_path / "site", {"cat": 10, "dog": 5, "emu": 5})
    loader = ImageFolderDataLoader(str(root), image_size=[3, 2], grayscale=True, valid_fraction=0.2, seed=1)
    assert isinstance(loader, DataLoader)
    assert loader.classes == ["cat", "dog", "emu"] and loader.num_classes == 3
    assert (loader.train_size, loader.valid_size, loader.feature_shape) == (16, 4, (1, 3, 2))
    assert np.bincount(np.concatenate([b[1] for b in loader.valid_batches()])).tolist() == [2, 1, 1]
    x, y = everything(loader)
    assert x.dtype == np.float32 and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    for label in range(3):  # each class keeps its brightness through the resize (bottom-right pixel)
        assert np.allclose(x[y == label][:, 0, -1, -1], 40 * (label + 1) / 255.0, atol=1e-6)


def test_rgb_mean_and_std_per_channel(tmp_path: Path) -> None:
    pixels = np.zeros((4, 4, 3), dtype=np.uint8)
    pixels[..., 0], pixels[..., 1], pixels[..., 2] = 255, 51, 0
    for name in ("a", "b"):
        for i in range(3):
            save(tmp_path / "site" / name / f"{i}.png", pixels, "RGB")
    loader = ImageFolderDataLoader(str(tmp_path / "site"), mean=[0.5, 0.2, 0.0], std=[0.5, 0.1, 2.0])
    x, _ = everything(loader)
    assert loader.feature_shape == (3, 4, 4)
    assert np.allclose(x[:, 0], 1.0) and np.allclose(x[:, 1], 0.0) and np.allclose(x[:, 2], 0.0)
    gray = ImageFolderDataLoader(str(tmp_path / "site"), grayscale=True, mean=0.5, std=0.5)
    assert gray.feature_shape == (1, 4, 4) and float(everything(gray)[0].max()) <= 1.0


def test_train_and_valid_folders_are_the_sites_own_split(tmp_path: Path) -> None:
    folder(tmp_path / "site" / "train", {"a": 4, "b": 3})
    folder(tmp_path / "site" / "valid", {"a": 2, "b": 1})
    loader = ImageFolderDataLoader(str(tmp_path / "site"))
    assert (loader.train_size, loader.valid_size) == (7, 3)
    assert np.concatenate([b[1] for b in loader.valid_batches()]).tolist() == [0, 0, 1]


def test_the_plans_classes_number_a_site_missing_a_class_alike(tmp_path: Path) -> None:
    root = folder(tmp_path / "site", {"dog": 3, "emu": 3})  # this site has no cat
    loader = ImageFolderDataLoader(str(root), classes=["cat", "dog", "emu"])
    assert loader.num_classes == 3 and set(everything(loader)[1].tolist()) == {1, 2}
    line = refused(root, classes=["cat", "dog"])
    assert f"data folder {root}: the class folder 'emu' is not one of the classes ('cat', 'dog')" in line


def test_hidden_files_other_extensions_and_deeper_folders_are_skipped(tmp_path: Path) -> None:
    root = folder(tmp_path / "site", {"a": 2, "b": 2})
    (root / "a" / "notes.txt").write_text("not an image")
    save(root / "a" / ".hidden.png", gradient(1))
    save(root / "a" / "deeper" / "x.png", gradient(1))
    save(root / "b" / "UPPER.PNG", gradient(80))
    (root / ".cache").mkdir()
    loader = ImageFolderDataLoader(str(root))
    assert loader.train_size + loader.valid_size == 5 and loader.classes == ["a", "b"]
    only_jpeg = refused(root, extensions=["jpg"])
    assert f"class folder {root / 'a'} has no images (.jpg)" in only_jpeg


def test_a_corrupt_or_truncated_image_names_its_path(tmp_path: Path) -> None:
    root = folder(tmp_path / "site", {"a": 3, "b": 3})
    bad = root / "b" / "9.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    assert f"image {bad} cannot be read" in refused(root)
    good = (root / "a" / "0.png").read_bytes()
    bad.write_bytes(good[: len(good) // 2])
    assert f"image {bad} cannot be read" in refused(root)


def test_a_class_folder_with_no_images(tmp_path: Path) -> None:
    root = folder(tmp_path / "site", {"a": 3})
    (root / "b").mkdir()
    line = refused(root)
    assert f"class folder {root / 'b'} has no images (.png, .jpg" in line and "extensions" in line


def test_missing_folder_no_classes_and_a_stray_folder_beside_train_and_valid(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    assert f"data folder {missing} does not exist" in refused(missing) and "plan/data.yaml" in refused(missing)
    (tmp_path / "flat").mkdir()
    save(tmp_path / "flat" / "x.png", gradient(1))
    assert f"data folder {tmp_path / 'flat'} has no class sub-folders" in refused(tmp_path / "flat")
    folder(tmp_path / "split" / "train", {"a": 2})
    folder(tmp_path / "split" / "valid", {"a": 1})
    folder(tmp_path / "split" / "test", {"a": 1})
    assert "has train/ and valid/ and also test/" in refused(tmp_path / "split")
    folder(tmp_path / "unknown" / "train", {"a": 2})
    folder(tmp_path / "unknown" / "valid", {"z": 1})
    assert f"data folder {tmp_path / 'unknown' / 'valid'}: the class folder 'z' is not one of the classes ('a')" in refused(tmp_path / "unknown")


def test_sizes_differ_without_image_size(tmp_path: Path) -> None:
    root = folder(tmp_path / "site", {"a": 3, "b": 3})
    odd = save(root / "b" / "odd.png", gradient(80, (5, 5)))
    line = refused(root)
    assert f"image {odd} is 5x5 pixels" in line and "is 6x4" in line and "image_size" in line
    assert ImageFolderDataLoader(str(root), image_size=[5, 5]).feature_shape == (3, 5, 5)


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"image_size": [8]}, "image_size is [8]; it must be [height, width]"),
        ({"image_size": [8, 0]}, "image_size is [8, 0]"),
        ({"mean": [0.1, 0.2]}, "mean is [0.1, 0.2]; it must be a number or a list of 3"),
        ({"std": [1.0, 0.0, 1.0]}, "std is [1.0, 0.0, 1.0]; every value must be > 0"),
        ({"grayscale": 1}, "grayscale is 1; it must be true or false"),
        ({"extensions": []}, "extensions is empty"),
        ({"classes": ["a", "a"]}, "classes names 'a' twice"),
        ({"valid_fraction": 0.0}, "valid_fraction is 0.0"),
    ],
)
def test_bad_settings_name_the_setting(tmp_path: Path, settings: dict, words: str) -> None:
    root = folder(tmp_path / "site", {"a": 3, "b": 3})
    assert words in refused(root, **settings)


def test_too_few_images_for_a_split(tmp_path: Path) -> None:
    root = folder(tmp_path / "site", {"a": 1, "b": 1})
    assert "has 2 images: too few for a training and a validation split" in refused(root)


def test_without_pillow_one_line_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = folder(tmp_path / "site", {"a": 2, "b": 2})
    monkeypatch.setitem(sys.modules, "PIL", None)
    monkeypatch.setitem(sys.modules, "PIL.Image", None)
    line = refused(root)
    assert "ImageFolderDataLoader needs the PIL.Image package, which is not installed" in line
    assert "pip install 'accord[images]'" in line


def save16(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint16)).save(path)  # mode I;16
    return path


@pytest.mark.parametrize("grayscale", [True, False])
def test_16_bit_images_are_scaled_by_their_depth_not_saturated(tmp_path: Path, grayscale: bool) -> None:
    root = tmp_path / "site"
    for name, value in (("low", 1000), ("high", 30000)):
        for i in range(3):
            with Image.open(save16(root / name / f"{i}.png", np.full((4, 4), value))) as check:
                assert check.mode == "I;16"
    loader = ImageFolderDataLoader(str(root), grayscale=grayscale)
    x, y = everything(loader)
    assert loader.feature_shape == ((1 if grayscale else 3), 4, 4)
    assert np.allclose(x[y == loader.classes.index("low")], 1000 / 65535, atol=1e-6)
    assert np.allclose(x[y == loader.classes.index("high")], 30000 / 65535, atol=1e-6)
    resized = everything(ImageFolderDataLoader(str(root), grayscale=grayscale, image_size=[2, 3]))[0]
    assert resized.shape[2:] == (2, 3) and np.isclose(resized.max(), 30000 / 65535, atol=1e-6)


def test_32_bit_integer_and_float_images(tmp_path: Path) -> None:
    root = tmp_path / "site"
    for i in range(3):
        save(root / "int" / f"{i}.tif", np.full((4, 4), 13107, dtype=np.int32), "I")
        save(root / "float" / f"{i}.tif", np.full((4, 4), 0.25, dtype=np.float32), "F")
    loader = ImageFolderDataLoader(str(root), grayscale=True)
    x, y = everything(loader)
    assert np.allclose(x[y == loader.classes.index("int")], 0.2, atol=1e-6) and np.allclose(x[y == loader.classes.index("float")], 0.25)
    wide = save(root / "int" / "9.tif", np.full((4, 4), 70000, dtype=np.int32), "I")
    assert f"image {wide} has 32-bit integer pixels from 70000 to 70000; only 16-bit values (0..65535)" in refused(root)
    wide.unlink()
    bright = save(root / "float" / "9.tif", np.full((4, 4), 2.5, dtype=np.float32), "F")
    assert f"image {bright} has floating-point pixels from 2.5 to 2.5; they must lie in [0, 1]" in refused(root)


def test_an_unexpected_mode_is_refused_in_one_line(tmp_path: Path) -> None:
    root = folder(tmp_path / "site", {"a": 3, "b": 3})
    odd = root / "b" / "lab.tif"
    Image.new("LAB", (4, 6)).save(odd)
    with Image.open(odd) as check:
        assert check.mode == "LAB"
    line = refused(root)
    assert f"image {odd} has the Pillow mode 'LAB', which the loader does not read" in line and "16-bit grayscale" in line


def test_a_negative_seed_names_the_setting(tmp_path: Path) -> None:
    root = folder(tmp_path / "site", {"a": 3, "b": 3})
    assert "data_loader.settings.seed is -1; it must be an integer >= 0" in refused(root, seed=-1)


def test_image_sizes_and_the_arrays_bytes_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = folder(tmp_path / "site", {"a": 3, "b": 3})
    assert "image_size is [200000, 200000]; it must be [height, width] in pixels, each 1 to 8192" in refused(root, image_size=[200000, 200000])
    assert "image_size is [8193, 8]" in refused(root, image_size=[8193, 8])
    monkeypatch.setattr("accord.data.image_folder.MAX_ARRAY_BYTES", 2**30)
    line = refused(root, image_size=[8192, 8192])
    assert "6 images of 3x8192x8192 float32 pixels need 4.5 GiB, past the loader's limit of 1 GiB" in line and "image_size smaller" in line
    monkeypatch.setattr("accord.data.image_folder.MAX_SIDE", 5)
    assert f"image {root / 'a' / '0.png'} is 6x4 pixels, larger than 5 on a side" in refused(root)


@pytest.mark.parametrize(
    ("settings", "shown"),
    [
        ({"std": 1e-45}, "std 1e-45"),
        ({"mean": 1e39}, "mean 1e+39"),
        ({"std": [1.0, 1.0, 1e-45]}, "std [1.0, 1.0, 1e-45]"),
        ({"std": 1e39}, "std 1e+39"),  # inf in float32: every pixel would become 0
    ],
)
def test_mean_and_std_that_overflow_float32_are_refused(tmp_path: Path, settings: dict, shown: str) -> None:
    root = folder(tmp_path / "site", {"a": 3, "b": 3})
    line = refused(root, **settings)
    assert shown in line and "normalized by them, are beyond float32's range" in line


def test_a_size_mismatch_names_the_reference_image(tmp_path: Path) -> None:
    """The reference is the first training image, also when the odd one is in valid/."""
    folder(tmp_path / "site" / "train", {"a": 2, "b": 2})
    folder(tmp_path / "site" / "valid", {"a": 1, "b": 1})
    odd = save(tmp_path / "site" / "valid" / "a" / "0.png", gradient(80, (9, 9)))
    line = refused(tmp_path / "site")
    assert f"image {odd} is 9x9 pixels, but {tmp_path / 'site' / 'train' / 'a' / '0.png'} is 6x4" in line
