"""Data sets by spec: ``mnist5k``, ``mnist:DIR``, ``cifar10:DIR``, ``cifar100:DIR``,
``synthetic[:C,H,W,classes]``. Every loader returns an ``ImageDataset`` of NCHW floats and
int64 labels."""

from __future__ import annotations

import torch
from torch.utils.data import Subset

from .. import validate
from ..catalog import SPEC_HELP
from ..errors import ReliefError
from .cifar import load_cifar
from .mnist import load_mnist
from .mnist5k import load_mnist5k
from .synthetic import SIZES as SYNTHETIC_SIZES
from .synthetic import load_synthetic
from .tensors import ImageDataset

__all__ = ["SPEC_HELP", "ImageDataset", "load", "train_val_split"]

SPLITS = ("train", "test")


def load(spec: str, split: str) -> ImageDataset:
    """The ``split`` ("train" or "test") of the data set named by ``spec``."""
    if split not in SPLITS:
        raise ReliefError(f"unknown split {split!r}; use 'train' or 'test'")
    if not isinstance(spec, str):
        raise ReliefError(f"data spec must be text ({SPEC_HELP}), got {spec!r}")
    kind, _, argument = spec.partition(":")
    if kind == "mnist5k" and not argument:
        return load_mnist5k(split)
    if kind == "mnist" and argument:
        return load_mnist(argument, split)
    if kind in ("cifar10", "cifar100") and argument:
        return load_cifar(kind, argument, split)
    if kind == "synthetic":
        shape, classes = _synthetic_args(argument or "1,28,28,10")
        return load_synthetic(shape, classes, split)
    raise ReliefError(f"unknown data spec {spec!r}; use {SPEC_HELP}")


def _synthetic_args(argument: str) -> tuple[tuple[int, int, int], int]:
    try:
        c, h, w, classes = (int(v) for v in argument.split(","))
    except ValueError:
        raise ReliefError(f"synthetic:{argument}: expected synthetic:C,H,W,CLASSES") from None
    if min(c, h, w) < 1 or classes < 2:
        raise ReliefError(f"synthetic:{argument}: sizes must be >= 1 and classes >= 2")
    largest = max(SYNTHETIC_SIZES.values()) + classes
    validate.allocation(f"synthetic:{argument}", 4 * largest * c * h * w)
    return (c, h, w), classes


def train_val_split(dataset: ImageDataset, val_fraction: float, seed: int = 0,
                    ) -> tuple[Subset, Subset]:
    """A seeded, class-stratified split of a training set into train and validation parts."""
    if not 0 < val_fraction < 1:
        raise ReliefError(f"validation fraction must lie in (0, 1), got {val_fraction}")
    generator = torch.Generator().manual_seed(seed)
    train_idx: list[int] = []
    val_idx: list[int] = []
    for label in dataset.labels.unique():
        members = torch.nonzero(dataset.labels == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        cut = max(1, round(len(members) * val_fraction)) if len(members) > 1 else 0
        val_idx += members[:cut].tolist()
        train_idx += members[cut:].tolist()
    return Subset(dataset, sorted(train_idx)), Subset(dataset, sorted(val_idx))
