"""A learnable synthetic classification set: one fixed random prototype per class plus noise."""

from __future__ import annotations

import torch

from .tensors import ImageDataset

SIZES = {"train": 1024, "test": 256}


def load_synthetic(shape: tuple[int, int, int], classes: int, split: str) -> ImageDataset:
    """x = clamp(0.5 + 0.25 * prototype[y] + 0.1 * noise, 0, 1); same seed, same data."""
    generator = torch.Generator().manual_seed(0)
    prototypes = torch.randn((classes, *shape), generator=generator)
    generator.manual_seed(1 if split == "train" else 2)
    count = SIZES[split]
    labels = torch.randint(0, classes, (count,), generator=generator)
    noise = torch.randn((count, *shape), generator=generator)
    images = (0.5 + 0.25 * prototypes[labels] + 0.1 * noise).clamp(0, 1)
    return ImageDataset(images, labels, classes)
