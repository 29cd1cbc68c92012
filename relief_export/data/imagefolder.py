"""``imagefolder:DIR``: one subfolder per class of PNG / JPEG / BMP / GIF / WebP images, read
with Pillow. ``DIR/train`` and ``DIR/test`` (or ``DIR/val``) are the splits when they exist;
otherwise a seeded 20% of each class is the test split.

Options: ``image_size=H[,W]`` (resize, bilinear; without it every image must have one size),
``channels=1|3`` (default: 1 when every training image is grayscale, else 3),
``normalize=none|imagenet|dataset`` (x = (x / 255 - mean) / std per channel; ``dataset``: the
mean and std of the training split).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import validate
from ..errors import ReliefError, first_line
from .spec import Spec, take
from .split import holdout
from .tensors import ImageDataset

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
OPTIONS = {"image_size": "", "channels": "", "normalize": "none"}
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
TEST_FOLDERS = ("test", "val")


def load_imagefolder(spec: Spec, split: str) -> ImageDataset:
    options = take(spec, OPTIONS)
    root = Path(spec.argument)
    if not root.is_dir():
        raise ReliefError(f"imagefolder:{root}: no such folder")
    size = _size(options["image_size"], spec)
    test_folder = next((root / f for f in TEST_FOLDERS if (root / f).is_dir()), None)
    has_splits = (root / "train").is_dir() and test_folder is not None
    train_root = root / "train" if has_splits else root
    classes = _classes(train_root)
    opened = _opened(_files(train_root, classes))
    channels = _channels(options["channels"], opened, spec)
    training = _stacked(opened, channels, size)
    if has_splits and split == "test":
        assert test_folder is not None
        _check_same_classes(test_folder, classes)
        chosen = _stacked(_opened(_files(test_folder, classes, allow_empty=True)), channels,
                          size)
    else:
        chosen = training if has_splits else holdout(training, split, f"imagefolder:{root}")
    mean, std = _normalisation(options["normalize"], training, channels, spec)
    chosen.num_classes = len(classes)
    chosen.mean = None if mean is None else torch.tensor(mean).view(-1, 1, 1)
    chosen.std = None if std is None else torch.tensor(std).view(-1, 1, 1)
    return chosen


def _size(text: str, spec: Spec) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or min(values) < 1 or max(values) > 8192:
        raise ReliefError(f"data spec {spec.text()!r}: image_size must be H or H,W (1..8192), "
                          f"got {text!r}")
    return (values[0], values[-1])


def _classes(folder: Path) -> list[str]:
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise ReliefError(f"imagefolder:{folder}: needs one subfolder per class (at least 2), "
                          f"found {len(classes)}")
    return classes


def _files(folder: Path, classes: list[str], allow_empty: bool = False
           ) -> list[tuple[Path, int]]:
    files = []
    for label, name in enumerate(classes):
        found = sorted(p for p in (folder / name).iterdir()
                       if p.is_file() and p.suffix.lower() in EXTENSIONS) \
            if (folder / name).is_dir() else []
        if not found and not allow_empty:
            raise ReliefError(f"imagefolder:{folder / name}: class folder holds no image "
                              f"({', '.join(EXTENSIONS)})")
        files += [(path, label) for path in found]
    if not files:
        raise ReliefError(f"imagefolder:{folder}: no image in any class folder")
    return files


def _check_same_classes(folder: Path, classes: list[str]) -> None:
    extra = sorted(set(_classes(folder)) - set(classes))
    if extra:
        raise ReliefError(f"imagefolder:{folder}: classes {extra} have no training images "
                          f"(training classes: {classes})")


def _open(path: Path):
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise ReliefError("--data imagefolder: needs Pillow: pip install pillow") from None

    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise ReliefError(f"{path}: not a readable image ({first_line(error)})") from None


def _opened(files: list[tuple[Path, int]]) -> list[tuple[Path, Any, int]]:
    """Each file read once: (path, image, label)."""
    return [(path, _open(path), label) for path, label in files]


def _channels(text: str, opened: list[tuple[Path, Any, int]], spec: Spec) -> int:
    if text:
        if text not in ("1", "3"):
            raise ReliefError(f"data spec {spec.text()!r}: channels must be 1 or 3, got {text!r}")
        return int(text)
    return 1 if all(image.mode in ("L", "1", "I;16", "I") for _, image, _ in opened) else 3


def _stacked(opened: list[tuple[Path, Any, int]], channels: int,
             size: tuple[int, int] | None) -> ImageDataset:
    from PIL import Image

    arrays, first = [], None
    for path, original, _ in opened:
        image = original.convert("L" if channels == 1 else "RGB")
        if size is not None:
            image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        elif first is None:
            first = (path, image.size)
        elif image.size != first[1]:
            raise ReliefError(f"{path}: image size {image.size[1]}x{image.size[0]} differs from "
                              f"{first[0]} ({first[1][1]}x{first[1][0]}); pass --image-size H,W "
                              "to resize them all")
        pixels = np.asarray(image, dtype=np.uint8)
        arrays.append(pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1))
        if len(arrays) == 1:
            validate.allocation(f"imagefolder ({len(opened)} images)",
                                arrays[0].nbytes * len(opened))
    labels = torch.tensor([label for _, _, label in opened], dtype=torch.int64)
    return ImageDataset(torch.from_numpy(np.stack(arrays)), labels, int(labels.max()) + 1)


def _normalisation(name: str, training: ImageDataset, channels: int, spec: Spec
                   ) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    if name == "none":
        return None, None
    if name == "imagenet":
        if channels != 3:
            raise ReliefError(f"data spec {spec.text()!r}: normalize=imagenet needs 3 channels")
        return IMAGENET
    if name == "dataset":
        pixels = training.images.float() / 255.0
        per_channel = pixels.transpose(0, 1).reshape(channels, -1)
        std = per_channel.std(1).clamp_min(1e-6)
        return tuple(per_channel.mean(1).tolist()), tuple(std.tolist())
    raise ReliefError(f"data spec {spec.text()!r}: normalize must be none, imagenet or "
                      f"dataset, got {name!r}")
