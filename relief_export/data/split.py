"""Seeded splits of one set of samples: train / test hold-outs and train / validation."""

from __future__ import annotations

import torch
from torch.utils.data import Subset

from ..errors import ReliefError
from .tensors import ImageDataset

HOLDOUT_FRACTION = 0.2


def split_indices(labels: torch.Tensor, fraction: float, seed: int
                  ) -> tuple[list[int], list[int]]:
    """(kept, held out): per class for class labels (int64, one per sample), at random for
    anything else; each class with > 1 sample keeps max(1, round(n * fraction)) held out."""
    generator = torch.Generator().manual_seed(seed)
    groups = [torch.nonzero(labels == label).flatten() for label in labels.unique()] \
        if labels.dtype == torch.int64 and labels.ndim == 1 else [torch.arange(len(labels))]
    kept: list[int] = []
    held: list[int] = []
    for members in groups:
        members = members[torch.randperm(len(members), generator=generator)]
        cut = max(1, round(len(members) * fraction)) if len(members) > 1 else 0
        held += members[:cut].tolist()
        kept += members[cut:].tolist()
    return sorted(kept), sorted(held)


def holdout(dataset: ImageDataset, split: str, where: str,
            fraction: float = HOLDOUT_FRACTION, seed: int = 0) -> ImageDataset:
    """The "train" or "test" part of a set that has no test split of its own: a seeded
    ``fraction`` of each class is the test part."""
    kept, held = split_indices(dataset.labels, fraction, seed)
    chosen = kept if split == "train" else held
    if not chosen:
        raise ReliefError(f"{where}: too few samples ({len(dataset)}) to hold out a test split; "
                          "give the data set a test split or more samples")
    return dataset.subset(torch.tensor(chosen))


def train_val_split(dataset: ImageDataset, val_fraction: float, seed: int = 0,
                    ) -> tuple[Subset, Subset]:
    """A seeded, class-stratified split of a training set into train and validation parts."""
    if not 0 < val_fraction < 1:
        raise ReliefError(f"validation fraction must lie in (0, 1), got {val_fraction}")
    kept, held = split_indices(dataset.labels, val_fraction, seed)
    return Subset(dataset, kept), Subset(dataset, held)
