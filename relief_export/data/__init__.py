"""Data sets by spec (``KIND[:ARGUMENT][?options]``, see spec.py): one table, ``LOADERS``,
names the loader of each kind. Every loader returns an ``ImageDataset``: samples (images,
feature rows or token ids) and labels."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from .. import validate
from ..catalog import SPEC_HELP
from ..errors import ReliefError
from .arrays import load_csv, load_npz
from .cifar import load_cifar
from .hf_datasets import load_hf_dataset
from .imagefolder import load_imagefolder
from .mnist import load_mnist
from .mnist5k import load_mnist5k
from .spec import Spec, parse, take, with_options
from .split import train_val_split
from .synthetic import SIZES as SYNTHETIC_SIZES
from .synthetic import load_synthetic
from .tensors import ImageDataset

__all__ = ["LOADERS", "SPEC_HELP", "ImageDataset", "load", "train_val_split", "with_options"]

SPLITS = ("train", "test")


@dataclass(frozen=True)
class Loader:
    """``read(spec, split)``; ``argument``: "required", "none" or "optional"."""

    read: Callable[[Spec, str], ImageDataset]
    argument: str
    usage: str


def _synthetic(spec: Spec, split: str) -> ImageDataset:
    take(spec, {})
    shape, classes = _synthetic_args(spec.argument or "1,28,28,10")
    return load_synthetic(shape, classes, split)


def _plain(read: Callable[..., ImageDataset]) -> Callable[[Spec, str], ImageDataset]:
    """A loader of a kind that takes no options: ``read([argument,] split)``."""
    def load_plain(spec: Spec, split: str) -> ImageDataset:
        take(spec, {})
        return read(*([spec.argument] if spec.argument else []), split)
    return load_plain


LOADERS: dict[str, Loader] = {
    "mnist5k": Loader(_plain(load_mnist5k), "none", "mnist5k"),
    "mnist": Loader(_plain(load_mnist), "required", "mnist:DIR"),
    "cifar10": Loader(_plain(partial(load_cifar, "cifar10")), "required", "cifar10:DIR"),
    "cifar100": Loader(_plain(partial(load_cifar, "cifar100")), "required", "cifar100:DIR"),
    "synthetic": Loader(_synthetic, "optional", "synthetic[:C,H,W,CLASSES]"),
    "imagefolder": Loader(load_imagefolder, "required", "imagefolder:DIR"),
    "npz": Loader(load_npz, "required", "npz:FILE"),
    "csv": Loader(load_csv, "required", "csv:FILE"),
    "hf": Loader(load_hf_dataset, "required", "hf:DIR"),
}


def load(spec: str, split: str) -> ImageDataset:
    """The ``split`` ("train" or "test") of the data set named by ``spec``."""
    if split not in SPLITS:
        raise ReliefError(f"unknown split {split!r}; use 'train' or 'test'")
    if not isinstance(spec, str):
        raise ReliefError(f"data spec must be text ({SPEC_HELP}), got {spec!r}")
    parsed = parse(spec)
    loader = LOADERS.get(parsed.kind)
    argument_fits = loader is not None and (
        loader.argument == "optional" or (loader.argument == "required") == bool(parsed.argument))
    if loader is None or not argument_fits:
        raise ReliefError(f"unknown data spec {spec!r}; use {SPEC_HELP}")
    return loader.read(parsed, split)


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
