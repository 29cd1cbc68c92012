"""CIFAR-10 / CIFAR-100 from the python pickle batches, read without running pickled code."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ReliefError, first_line
from .tensors import ImageDataset

_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),
}
_LAYOUT = {
    "cifar10": ({"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
                b"labels", 10),
    "cifar100": ({"train": ["train"], "test": ["test"]}, b"fine_labels", 100),
}
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


class _SafeUnpickler(pickle.Unpickler):
    """Allows only the numpy globals that CIFAR batches reference; anything else is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing global {module}.{name}")


def read_batch(path: Path) -> dict:
    """One pickled batch as a dict (bytes keys, as the files are written by Python 2)."""
    try:
        with open(path, "rb") as handle:
            batch = _SafeUnpickler(handle, encoding="bytes").load()
    except FileNotFoundError:
        raise ReliefError(f"{path}: missing CIFAR batch file") from None
    except Exception as error:  # a damaged pickle raises many kinds
        raise ReliefError(f"{path}: not a CIFAR pickle batch ({first_line(error)})") from None
    if not isinstance(batch, dict):
        raise ReliefError(f"{path}: not a CIFAR pickle batch (holds {type(batch).__name__})")
    return batch


def load_cifar(kind: str, directory: str | Path, split: str) -> ImageDataset:
    """CIFAR images as 3x32x32 floats normalised per channel with the CIFAR-10 mean / std."""
    folder = Path(directory)
    if not folder.is_dir():
        raise ReliefError(f"{folder}: {kind} directory not found")
    files, label_key, classes = _LAYOUT[kind]
    images, labels = [], []
    for name in files[split]:
        data, batch_labels = _batch_arrays(folder / name, label_key, classes)
        images.append(data)
        labels.append(batch_labels)
    return ImageDataset(torch.from_numpy(np.concatenate(images)),
                        torch.from_numpy(np.concatenate(labels)), classes, MEAN, STD)


def _batch_arrays(path: Path, label_key: bytes, classes: int) -> tuple[np.ndarray, np.ndarray]:
    batch = read_batch(path)
    if b"data" not in batch or label_key not in batch:
        raise ReliefError(f"{path}: CIFAR batch lacks b'data' or {label_key!r}")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ReliefError(f"{path}: CIFAR data must be uint8 N x 3072, got {data.dtype} "
                          f"{data.shape}")
    if len(labels) != len(data) or (labels.size and (labels.min() < 0 or labels.max() >= classes)):
        raise ReliefError(f"{path}: labels do not match the images or lie outside 0..{classes - 1}")
    return data.reshape(-1, 3, 32, 32), labels
