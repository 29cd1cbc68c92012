"""MNIST from the standard IDX files (gzipped or not)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from ..errors import ReliefError
from .tensors import ImageDataset

_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_UBYTE = 0x08


def read_idx(path: Path) -> np.ndarray:
    """An IDX file: magic (0, 0, type 0x08 = ubyte, ndim), ndim big-endian uint32 sizes, data."""
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _UBYTE:
        raise ReliefError(f"{path}: not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ReliefError(f"{path}: truncated IDX header")
    shape = tuple(int(v) for v in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise ReliefError(f"{path}: IDX header promises {expected} bytes of data for shape "
                          f"{shape}, file holds {len(raw) - header}")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (OSError, EOFError) as error:
        raise ReliefError(f"{path}: cannot read ({error})") from None


def _find(directory: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"),
                 stem.replace("-idx", ".idx") + ".gz"):
        if (directory / name).is_file():
            return directory / name
    raise ReliefError(f"{directory}: missing MNIST file {stem} (or {stem}.gz)")


def load_mnist(directory: str | Path, split: str) -> ImageDataset:
    """The MNIST split from DIR: 28x28 uint8 images as 1x28x28 floats in [0, 1]."""
    folder = Path(directory)
    if not folder.is_dir():
        raise ReliefError(f"{folder}: MNIST directory not found")
    images_name, labels_name = _FILES[split]
    images = read_idx(_find(folder, images_name))
    labels = read_idx(_find(folder, labels_name))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ReliefError(f"{folder}: {split} images {images.shape} do not match labels "
                          f"{labels.shape}")
    if labels.size and labels.max() > 9:
        raise ReliefError(f"{folder}: {split} labels hold a class above 9")
    return ImageDataset(torch.from_numpy(images.copy()).unsqueeze(1),
                        torch.from_numpy(labels.astype(np.int64)), 10)
